"""Hash slots: what keys.py promises, what the audit catches, what the client survives."""

from __future__ import annotations

import asyncio
import pathlib

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from cluster.slot_audit import parse_monitor_line, violations
from ezthrottle_server.common import keys
from ezthrottle_server.common.redisconn import (
    REDIS_UNAVAILABLE,
    _KnownNodes,
    connect,
    connect_pubsub,
    is_cluster_url,
)

SERVICES = pathlib.Path(keys.__file__).resolve().parents[1]


def slot(key: str) -> int:
    return key_slot(key.encode())


@pytest.mark.parametrize("partition", [0, 1, 7])
def test_every_key_of_a_partition_is_in_one_slot(partition):
    job_id = keys.make_job_id(1_700_000_000_000, "0123456789abcdef", partition)
    partition_keys = [
        keys.idempotency(partition, "acme", "d1gest"),
        keys.job(job_id),
        keys.attempts(job_id),
        keys.send_lease(job_id),
        keys.region_stream(partition, "iad"),
        keys.delayed(partition),
        keys.deliveries(partition),
        keys.job_webhooks(job_id),
        keys.frugal_claim(job_id, "p:on_success"),
        keys.delivery_sends(partition, "any"),
        keys.delivery_scheduled(partition),
        keys.delivery_dead(partition),
        keys.delivery_dead(partition, "acme"),
        keys.usage(partition, "acme", "202501"),
        keys.queued(partition),
        keys.kept_bytes(partition, "1000:7"),
        keys.workflow_spawn(partition),
        keys.workflow_timers(partition),
    ]
    assert {slot(k) for k in partition_keys} == {slot(keys.partition_tag(partition))}


def test_every_key_of_a_domain_is_in_one_slot():
    d = "api.example:443"
    domain_keys = [
        keys.pacing_conf(d),
        keys.pacing_limit(d, "*"),
        keys.pacing_limit(d, "acme"),
        keys.pacing_wait(d, "*", "iad"),
        keys.pacing_wait(d, "acme", "lax"),
        keys.pacing_fair(d, "*"),
        keys.pacing_running(d, "*", "ord"),
    ]
    assert {slot(k) for k in domain_keys} == {slot(keys.domain_tag(d))}


def test_partitions_spread_over_slots():
    assert len({slot(keys.partition_tag(p)) for p in range(64)}) == 64


def test_no_code_asks_for_a_transaction():
    """MULTI/EXEC cannot span slots, and redis-py's cluster client refuses them: Lua scripts instead."""
    offenders = [str(p) for p in SERVICES.rglob("*.py") if "transaction=True" in p.read_text() or ".multi()" in p.read_text()]
    assert offenders == []


def test_cluster_urls():
    assert is_cluster_url("redis+cluster://10.0.0.1:6379") and is_cluster_url("rediss+cluster://:pw@cfg.example:6379")
    assert not is_cluster_url("redis://127.0.0.1:6379/0") and not is_cluster_url("rediss://h:6380")


def test_cluster_nodes_learnt_for_pub_sub_skip_failed_nodes():
    book = _KnownNodes(("seed", 7000))
    book.learn(
        "a1 10.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n"
        "b2 10.0.0.2:7000@17000 master,fail - 0 0 2 disconnected 5461-10922\n"
        "c3 10.0.0.3:7000@17000,node-c slave a1 0 0 1 connected\n"
        "d4 :0@0 master,noaddr - 0 0 3 disconnected\n"
    )
    assert book.candidates(("10.0.0.2", 7000)) == [("10.0.0.2", 7000), ("10.0.0.1", 7000), ("10.0.0.3", 7000), ("seed", 7000)]


def test_monitor_lines_parse_with_escapes():
    def quoted(arg: str) -> str:  # as Redis shows an argument in MONITOR
        out = ""
        for b in arg.encode():
            c = chr(b)
            out += "\\" + c if c in '"\\' else c if 32 <= b < 127 else f"\\x{b:02x}"
        return f'"{out}"'

    args = ["HSET", "ezt:{ezt:p0}:job:x", "spec", '{"a":"b \\"c"}', "€ and tab\t"]
    source, parsed = parse_monitor_line("1700000000.1 [0 lua] " + " ".join(quoted(a) for a in args))
    assert (source, parsed) == ("lua", args)


@pytest.mark.asyncio
async def test_the_audit_catches_a_script_touching_a_key_it_was_not_given(cluster, redis, slot_audit):
    declared, hidden = "ezt:{ezt:p0}:a", "ezt:{ezt:p0}:hidden"  # same slot: Redis runs it, the audit must object
    await redis.eval("redis.call('SET', KEYS[1], 1) return redis.call('GET', ARGV[1])", 1, declared, hidden)
    problems = violations(cluster, slot_audit.stop())
    assert len(problems) == 1 and hidden in problems[0]


@pytest.mark.asyncio
async def test_the_client_finds_the_cluster_again_after_forgetting_every_node(redis_url, redis):
    """redis-py drops a node from its startup list on each connection error; with all gone it
    could never reconnect (redis-py #3221). Ours puts the URL's node back before rediscovery."""
    client = connect(redis_url)
    assert isinstance(client, RedisCluster)
    try:
        await client.set("ezt:probe", "1")
        client.nodes_manager.startup_nodes.clear()
        await client.aclose()  # what redis-py does after a connection error: rediscover on next use
        assert await client.get("ezt:probe") == "1"
    finally:
        await client.aclose()


@pytest.mark.asyncio
async def test_pub_sub_on_any_node_hears_a_publish_made_on_every_master(cluster, redis_url, redis):
    listener = connect_pubsub(redis_url)
    sub = listener.pubsub(ignore_subscribe_messages=True)
    try:
        await sub.subscribe("ezt:events:probe")
        # one script per partition, each run on the master of its slot
        for p in range(4):
            await redis.eval("return redis.call('PUBLISH', ARGV[1], ARGV[2])", 1, keys.delayed(p), "ezt:events:probe", str(p))
        heard: list[str] = []
        async with asyncio.timeout(5):
            while len(heard) < 4:
                msg = await sub.get_message(timeout=1)  # None for the (ignored) subscribe confirmation too
                if msg is not None:
                    heard.append(msg["data"])
        assert sorted(heard) == ["0", "1", "2", "3"]
    finally:
        await sub.aclose()
        await listener.aclose()


def test_unavailable_errors_are_redis_errors_not_bugs():
    from redis.exceptions import ClusterDownError, RedisClusterException

    assert issubclass(ClusterDownError, REDIS_UNAVAILABLE)
    assert not issubclass(RedisClusterException, REDIS_UNAVAILABLE)  # e.g. a cross-slot command: a bug, not an outage
