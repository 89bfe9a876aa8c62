"""Every Lua script of the server, loaded in one place.

Scripts are ``.lua`` files next to the code that calls them:
``common/scripts/`` (jobs, deliveries, workflows, auth) and
``pacing/scripts/`` (the per-domain limits). A script is named by its area and
file, ``"common/submit"`` or ``"pacing/grant"``; common scripts may be named
bare (``"submit"``).

A script shares code with another through a line of its own::

    --@include pacing/_prelude.lua

which the loader replaces with that file (includes nest; a file is included
at most once per script). That is how every pacing script gets the shared
prelude, and how ``accept.lua`` is ``submit.lua``'s body with ``take.lua``'s
logic in front of it: both are files, composed when they load, never Lua in
Python strings. :func:`register` gives a redis-py ``Script`` (EVALSHA, loaded
again on ``NOSCRIPT``).

Callers never build a script's KEYS and ARGV by hand: each script has one
typed function (``job_scripts.py``, ``workflow_scripts.py``,
``schedule_scripts.py``, ``leases.py``, ...) that names its keys and
arguments and answers a dataclass, an enum, a bool or a count. Such a
function takes the script as a :data:`ScriptRun`: the registered script
itself, or a batcher's ``functools.partial(batch.script, script)``. One on
a job's path may answer with :func:`answered` instead of being a coroutine:
a future of the parsed reply, which ``asyncio.shield`` guards without a task
of its own when the call is a batched one (a task per job and call, before).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import EZThrottleServerError

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

    from .redisconn import RedisClient

ScriptRun = Callable[..., Awaitable[Any]]  # run(keys=[...], args=[...]): a registered script, or a batcher's partial

T = TypeVar("T")


def answered(call: Awaitable[Any], parse: Callable[[Any], T]) -> asyncio.Future[T]:
    """The reply of a script call under way, parsed, as a future (see the module docstring).

    Cancelling the future cancels the call, as cancelling a coroutine awaiting
    it would; a call that fails, or whose reply does not parse, fails it.
    """
    inner = asyncio.ensure_future(call)  # a batched call is a future already: no task
    outer: asyncio.Future[T] = asyncio.get_running_loop().create_future()

    def reply(done: asyncio.Future[Any]) -> None:
        if done.cancelled():
            outer.cancel()
            return
        exc = done.exception()  # retrieved even when no one waits for it any more
        if outer.done():
            return
        if exc is not None:
            outer.set_exception(exc)
        else:
            try:
                outer.set_result(parse(done.result()))
            except Exception as err:
                outer.set_exception(err)

    def cancelled(done: asyncio.Future[T]) -> None:
        if done.cancelled():
            inner.cancel()

    inner.add_done_callback(reply)
    outer.add_done_callback(cancelled)
    return outer


AREAS = {"common": "ezthrottle_server.common", "pacing": "ezthrottle_server.pacing"}
_INCLUDE = re.compile(r"^--@include ([a-z]+/[A-Za-z0-9_]+\.lua)[ \t]*$", re.M)


class ScriptError(EZThrottleServerError):
    """A script file is missing, or an include names no file (a bug in the tree, found at load)."""


def _read(path: str) -> str:
    area, _, file = path.partition("/")
    if area not in AREAS:
        raise ScriptError(f"{path}: unknown area (known: {', '.join(AREAS)})")
    try:
        return resources.files(AREAS[area]).joinpath("scripts", file).read_text()
    except FileNotFoundError as exc:
        raise ScriptError(f"{path}: no such script") from exc


@cache
def source(name: str) -> str:
    """The full source of a script, includes resolved: ``"submit"``, ``"common/submit"``, ``"pacing/grant"``."""
    path = name if "/" in name else f"common/{name}"
    seen: set[str] = set()

    def expand(path: str) -> str:
        seen.add(path)

        def include(match: re.Match[str]) -> str:
            inner = match.group(1)
            return "" if inner in seen else expand(inner)

        return _INCLUDE.sub(include, _read(path))

    return expand(path if path.endswith(".lua") else f"{path}.lua")


def register(client: RedisClient, name: str) -> AsyncScript:
    """The script ``name`` on ``client``, ready to call."""
    # redis-py types RedisCluster.register_script (Redis's, reused) as taking a Redis.
    return client.register_script(source(name))  # type: ignore[misc]
