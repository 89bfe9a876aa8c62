"""Commands packed by hiredis are the bytes redis-py's own packer writes."""

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from ezthrottle_server.common import redisconn

pytestmark = pytest.mark.skipif(redisconn._hiredis_pack is None, reason="hiredis is not installed")

COMMANDS = [
    ("SET", "k", "v"),
    ("CLIENT SETNAME", "edge-1"),  # a name with a space is two arguments, as redis-py sends it
    (b"SCRIPT LOAD", "return 1"),
    ("EVALSHA", "0" * 40, 2, "ezt:{ezt:p0}:job:j", "ezt:{ezt:p0}:jobs:iad", 1.5, -3, 0.1, 1 / 3, 10**20, "é", b"\x00\xff", ""),
    ("ZADD", "ezt:pacing:ready:iad", "LT", 1795924481372, "api.example:443|*"),
    ("XADD", "s", "*", "job", "job_1_0123456789abcdefp0", "hook", 0, "customer", "acme"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: str(c[0]))
def test_same_bytes_as_redis_py(command):
    packed = redisconn._HiredisPackedConnection().pack_command(*command)
    assert b"".join(packed) == b"".join(bytes(p) for p in Connection().pack_command(*command))


@pytest.mark.parametrize("bad", [None, True, object()])
def test_what_redis_py_refuses_is_refused_alike(bad):
    with pytest.raises(DataError):
        redisconn._HiredisPackedConnection().pack_command("SET", "k", bad)


def test_a_plain_redis_url_gets_the_packer_and_tls_keeps_its_own():
    plain = redisconn.connect("redis://127.0.0.1:6379/0")
    tls = redisconn.connect("rediss://127.0.0.1:6379/0")
    assert plain.connection_pool.connection_class is redisconn._HiredisPackedConnection
    assert tls.connection_pool.connection_class is not redisconn._HiredisPackedConnection
