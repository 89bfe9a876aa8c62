"""A batcher's own connection to one Redis server, its calls pipelined without redis-py's ``Pipeline``.

On a busy node redis-py's pipeline costs more Python than the commands it
carries: taking a pooled connection (with its socket check) and giving it
back, the retry wrapper, per-command bookkeeping, an await per reply. On one
plain Redis server (``redis://``: what :func:`.redisconn.connect` builds with
hiredis; not a cluster, not TLS) a :class:`Wire` writes each batch of a
:class:`.batching.Batcher` in one write on a connection it keeps, and hands
each caller its reply from the transport's callback as the replies come back
(Redis answers in order): no task, no await. A batch may go out before the
previous one's replies are back.

- The connection is one of the client's pool. redis-py opens it (AUTH,
  SELECT, CLIENT SETNAME from the URL) and closes it with the client
  (``aclose()``); in between, the Wire reads and writes the socket itself
  (``transport.set_protocol``). Idle for a whole :data:`REPLY_WAIT_S`, it goes
  back to the pool.
- A caller gets what redis-py would answer: the reply parsed by hiredis with
  redis-py's error classes (``ResponseError``, ``NoScriptError`` …; an error
  is its own caller's, never the batch's), then passed through the client's
  ``response_callbacks`` (``HGETALL`` -> dict). A script the server does not
  know runs again on its own through its ``Script`` (:func:`run_alone`).
- A broken connection fails the calls in flight with ``ConnectionError``;
  the next batch opens it again. A server that stops answering (stopped,
  hung) fails them with ``TimeoutError`` after one to two
  :data:`REPLY_WAIT_S`; a host that vanished is given up by TCP (keepalive,
  ``TCP_USER_TIMEOUT``) in about 15 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import Callable
from typing import Any, TypeGuard, cast

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .redisconn import _dead_peer_options, _HiredisPackedConnection

try:
    import hiredis
except ImportError:  # pragma: no cover - hiredis is a dependency (redis[hiredis]); without it batches take redis-py's pipeline
    hiredis = None  # type: ignore[assignment]

REPLY_WAIT_S = 10.0  # a reply awaited this long (to twice as long) fails its connection's calls; idle this long, the connection goes back
OPEN_WAIT_S = 15.0  # longest wait for a connection: a free one in the pool (POOL_WAIT_S), then connect, AUTH, SELECT

Call = tuple[tuple[Any, ...], AsyncScript | None, asyncio.Future[Any]]  # (command, its script if EVALSHA, the caller's answer)
_Sent = tuple[asyncio.Future[Any], Callable[..., Any] | None, AsyncScript | None, tuple[Any, ...]]  # answer, parse, script, command

_NOT_ENOUGH_DATA = object()


def fits(client: Any) -> TypeGuard[aioredis.Redis]:
    """True when ``client`` talks to one server over plain TCP, RESP2, with hiredis: a client a :class:`Wire` can serve."""
    if hiredis is None or not isinstance(client, aioredis.Redis):
        return False
    pool = client.connection_pool
    return issubclass(pool.connection_class, _HiredisPackedConnection) and str(pool.connection_kwargs.get("protocol") or 2) == "2"


async def run_alone(script: AsyncScript, command: tuple[Any, ...]) -> Any:
    """An ``EVALSHA`` the server answered NOSCRIPT, run again through its ``Script`` (which loads it): the reply, or the error."""
    numkeys = command[2]
    try:
        return await script(keys=list(command[3 : 3 + numkeys]), args=list(command[3 + numkeys :]))
    except Exception as exc:
        return exc


class Wire(asyncio.Protocol):
    """One connection of a client's pool, kept while there are calls to make, each batch of them written at once."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.reply_wait_s = REPLY_WAIT_S
        self._pool = client.connection_pool
        self._callbacks = client.response_callbacks
        self._plain: dict[Any, Callable[..., Any] | None] = {}  # command name -> its response callback, for names packed as they are
        self._conn: AbstractConnection | None = None  # taken from the pool; None when given back
        self._transport: asyncio.Transport | None = None  # set while the Wire reads the socket
        self._streams: asyncio.BaseProtocol | None = None  # redis-py's protocol on that transport, handed back when done
        self._reader: hiredis.Reader | None = None
        self._sent: deque[_Sent] = deque()  # written, reply not read yet, in order
        self._queued: list[Call] = []  # waiting for the connection to open
        self._opening: asyncio.Task[None] | None = None
        self._reruns: deque[Call] = deque()  # answered NOSCRIPT, to run again through their Script
        self._rerunning: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # opening, the reruns, giving the connection back
        self._failure: Exception | None = None  # why the Wire closed its connection, for the calls in flight
        self._timer: asyncio.TimerHandle | None = None
        self._watched: _Sent | None = None  # the oldest call in flight at the last tick
        self._writes = 0
        self._writes_at_tick = 0

    def send(self, batch: list[Call]) -> None:
        """Write ``batch`` now, or as soon as the connection is open; each call's future gets its reply."""
        transport = self._transport
        if transport is not None:
            if transport.is_closing():  # going down; its calls in flight are failing
                self._fail(batch, RedisConnectionError("Connection closed by server."))
            else:
                self._write(transport, batch)
            return
        self._queued += batch
        if self._opening is None:
            self._opening = self._spawn(self._open())

    def _write(self, transport: asyncio.Transport, batch: list[Call]) -> None:
        assert self._conn is not None
        plain = self._plain
        sent = self._sent
        chunks: list[bytes] = []
        for command, script, fut in batch:
            name = command[0]
            try:
                parse = plain[name]
                chunks.append(hiredis.pack_command(command))
            except (KeyError, TypeError):  # a name not seen yet, or an argument hiredis cannot pack: redis-py's packer
                try:
                    chunks += self._conn.pack_command(*command)
                except Exception as exc:  # DataError: an argument Redis cannot take (None, a bool …): this call only
                    if not fut.done():
                        fut.set_exception(exc)
                    continue
                parse = self._callbacks.get(name)
                if isinstance(name, str) and " " not in name:  # hiredis packs it as redis-py does
                    plain[name] = parse
            sent.append((fut, parse, script, command))
        try:
            transport.write(b"".join(chunks))
        except Exception as exc:  # never a reply to these: fail every call in flight, the order of replies is lost
            self._close(RedisConnectionError(f"Error writing to Redis: {exc}"))
        self._writes += 1

    async def _open(self) -> None:
        try:
            try:
                async with asyncio.timeout(OPEN_WAIT_S):
                    conn = self._conn
                    if conn is None:
                        conn = self._conn = await self._pool.get_connection()
                    else:  # broken: redis-py opens it again (AUTH, SELECT …)
                        await conn.disconnect(nowait=True)
                        await conn.connect()  # type: ignore[no-untyped-call]
            except TimeoutError:
                raise RedisTimeoutError("Timeout connecting to server") from None
            self._attach(conn)
        except Exception as exc:
            self._opening = None
            queued, self._queued = self._queued, []
            self._fail(queued, exc)
            return
        except BaseException:  # cancelled (the loop is closing): so are the callers
            self._opening = None
            queued, self._queued = self._queued, []
            for _command, _script, fut in queued:
                fut.cancel()
            raise
        self._opening = None
        queued, self._queued = self._queued, []
        assert self._transport is not None
        self._write(self._transport, queued)

    def _attach(self, conn: AbstractConnection) -> None:
        """Read and write ``conn``'s socket from here on."""
        writer = conn._writer
        if writer is None or writer.transport.is_closing():
            raise RedisConnectionError("Connection closed by server.")
        transport = cast(asyncio.Transport, writer.transport)  # uvloop's is one too, unregistered
        sock = transport.get_extra_info("socket")
        if sock is not None:
            for option, value in _dead_peer_options().items():
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, option, value)
        encoder = conn.encoder
        self._reader = hiredis.Reader(
            protocolError=InvalidResponse,
            replyError=conn._parser.parse_error,  # redis-py's error classes
            notEnoughData=_NOT_ENOUGH_DATA,
            encoding=encoder.encoding if encoder.decode_responses else None,
            errors=encoder.encoding_errors if encoder.decode_responses else None,
        )
        self._streams = transport.get_protocol()
        transport.set_protocol(self)
        self._transport = transport
        self._watched = None
        self._writes_at_tick = self._writes
        self._timer = asyncio.get_running_loop().call_later(self.reply_wait_s, self._tick)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        if reader is None:
            return
        sent = self._sent
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except InvalidResponse as exc:
                self._close(RedisConnectionError(f"Protocol error: {exc}"))
                return
            if reply is _NOT_ENOUGH_DATA:
                return
            if not sent:
                self._close(RedisConnectionError("Protocol error: a reply to no command"))
                return
            fut, parse, script, command = sent.popleft()
            if isinstance(reply, Exception):
                if script is not None and isinstance(reply, NoScriptError):
                    self._rerun(script, command, fut)
                elif not fut.done():
                    fut.set_exception(reply)
            elif fut.done():
                continue  # its caller was cancelled; the call was made all the same
            elif parse is None:
                fut.set_result(reply)
            else:
                try:
                    fut.set_result(parse(reply))
                except Exception as exc:
                    fut.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = self._reader = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        failure, self._failure = self._failure, None
        if failure is None:
            failure = RedisConnectionError("Connection closed by server." if exc is None else f"Error while reading from Redis: {exc}")
        sent, self._sent = self._sent, deque()
        self._watched = None
        for fut, _parse, _script, _command in sent:
            if not fut.done():
                fut.set_exception(failure)
        streams, self._streams = self._streams, None
        if streams is not None:
            streams.connection_lost(exc)  # redis-py's streams close too (its disconnect() waits for that)

    def _close(self, failure: Exception) -> None:
        if self._transport is not None:
            self._failure = failure
            self._transport.abort()

    def _tick(self) -> None:
        """Every REPLY_WAIT_S while connected: fail a connection whose oldest call waited a whole tick; give back an idle one."""
        self._timer = None
        transport = self._transport
        if transport is None:
            return
        head = self._sent[0] if self._sent else None
        if head is not None and head is self._watched:
            self._close(RedisTimeoutError(f"Timeout reading from Redis: no reply in {self.reply_wait_s:g} s"))
            return
        if head is None and self._writes == self._writes_at_tick:
            self._give_back(transport)
            return
        self._watched = head
        self._writes_at_tick = self._writes
        self._timer = asyncio.get_running_loop().call_later(self.reply_wait_s, self._tick)

    def _give_back(self, transport: asyncio.Transport) -> None:
        conn, self._conn = self._conn, None
        streams, self._streams = self._streams, None
        self._transport = self._reader = None
        assert conn is not None and streams is not None
        transport.set_protocol(streams)
        self._spawn(self._pool.release(conn))

    def _rerun(self, script: AsyncScript, command: tuple[Any, ...], fut: asyncio.Future[Any]) -> None:
        self._reruns.append((command, script, fut))
        if self._rerunning is None:
            self._rerunning = self._spawn(self._rerun_all())

    async def _rerun_all(self) -> None:
        """The calls answered NOSCRIPT, run again one after the other, in the order they were made."""
        reruns = self._reruns
        try:
            while reruns:
                command, script, fut = reruns[0]
                assert script is not None
                reply = await run_alone(script, command)
                reruns.popleft()
                if fut.done():
                    continue
                if isinstance(reply, Exception):
                    fut.set_exception(reply)
                else:
                    fut.set_result(reply)
        except BaseException:  # cancelled (the loop is closing): so are the callers
            for _command, _script, fut in reruns:
                fut.cancel()
            reruns.clear()
            raise
        finally:
            self._rerunning = None

    def _spawn(self, work: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @staticmethod
    def _fail(calls: list[Call], error: Exception) -> None:
        for _command, _script, fut in calls:
            if not fut.done():
                fut.set_exception(error)
