"""Redis calls of concurrent tasks, sent as one pipeline per event-loop turn.

A busy node has hundreds of jobs in flight, each making its own small Redis
calls (``start_attempt.lua``, ``finish.lua``, ``release.lua`` …). One round
trip each costs a socket write, a wake-up and redis-py's per-command
bookkeeping, several times the work of the command itself. A
:class:`Batcher` queues the calls made during one turn of the event loop and
sends them together in one non-transactional pipeline, then hands each
caller its own reply (or its own error), as if it had called alone.

- Each caller's calls stay in its order: it awaits one before making the next.
- Calls of different callers in one batch run in the order they were made.
  Nothing is atomic across them (no MULTI), as with separate calls.
- A script the server does not know (``NOSCRIPT``: a restarted or failed-over
  Redis) is run again on its own through its ``Script`` object, which loads it.
- A batch is at most ``max_batch`` calls; more go out in the next pipeline at
  once. At light load a call waits for nothing but the end of the current turn.

On one plain Redis server (``redis://``, the client :func:`.redisconn.connect`
builds) a batch skips redis-py's ``Pipeline``: it goes out on a connection of
the batcher's own, a :class:`.wire.Wire` (one write per batch, each reply
handed over as it arrives, the same replies and errors). A cluster
(``redis+cluster://``) and TLS take the pipeline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from . import wire

if TYPE_CHECKING:
    from .redisconn import RedisClient

_Call = wire.Call


class Batcher:
    def __init__(self, redis: RedisClient, *, max_batch: int = 256) -> None:
        self.redis = redis
        self.max_batch = max_batch
        self._pending: list[_Call] = []
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None  # the running loop of the batch being gathered
        self._flushing: set[asyncio.Task[None]] = set()
        self._wire = wire.Wire(redis) if wire.fits(redis) else None  # else redis-py's pipeline

    def script(self, script: AsyncScript, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> asyncio.Future[Any]:
        """Run a registered script (EVALSHA), batched with other callers' calls: await the reply."""
        return self._queue(("EVALSHA", script.sha, len(keys), *keys, *args), script)

    def execute(self, *command: Any) -> asyncio.Future[Any]:
        """Run one command (e.g. ``"HMGET", key, field``), batched: await its reply as redis-py parses it."""
        return self._queue(command, None)

    def _queue(self, command: tuple[Any, ...], script: AsyncScript | None) -> asyncio.Future[Any]:
        # The loop is looked up once a batch (asking costs Python 3.11 a getpid call): the calls queued until the
        # flush it scheduled runs are made in that loop's turn.
        loop = self._loop
        if not self._scheduled or loop is None:
            loop = self._loop = asyncio.get_running_loop()
            self._scheduled = True
            loop.call_soon(self._flush)
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending.append((command, script, fut))
        if len(self._pending) >= self.max_batch:
            self._flush()
            self._scheduled = True  # the flush scheduled above still runs (and finds this batch gone)
        return fut

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        if not batch:
            return
        if self._wire is not None:
            self._wire.send(batch)
            return
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _send(self, batch: list[_Call]) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for command, _script, _fut in batch:
                    pipe.execute_command(*command)
                replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # the whole round trip failed: every caller sees it
            for _command, _script, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        except BaseException:  # cancelled (the loop is closing): so are the callers
            for _command, _script, fut in batch:
                fut.cancel()
            raise
        for (command, script, fut), reply in zip(batch, replies):
            if isinstance(reply, NoScriptError) and script is not None:
                reply = await wire.run_alone(script, command)
            if fut.done():
                continue  # its caller was cancelled; the call was made all the same
            if isinstance(reply, Exception):
                fut.set_exception(reply)
            else:
                fut.set_result(reply)
