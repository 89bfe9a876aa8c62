"""Logic written once for sync and async: a flow is a generator of effects.

A flow yields what to do next (an effect: send a request, sleep, ...) and
receives its result, or has its exception thrown in at the ``yield``, just
as a call there would return or raise; the flow's return value is the
result. ``run`` performs the effects with a sync ``perform``, ``run_async``
awaits an async one, so both share every decision (httpx's
``Auth.auth_flow`` works this way). ``Step`` and both clients use it.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Awaitable, Generator
from typing import Any, Callable, Optional, TypeVar

__all__ = ["Flow", "run", "run_async", "warn_caller"]

T = TypeVar("T")
Flow = Generator[Any, Any, T]


class _Stepper:
    """Iterates over a flow's effects; each outcome goes back in before the next one."""

    def __init__(self, flow: Flow[Any]) -> None:
        self._flow = flow
        self.sent: Any = None
        self.thrown: Optional[BaseException] = None
        self.result: Any = None

    def __iter__(self) -> _Stepper:
        return self

    def __next__(self) -> Any:
        sent, thrown = self.sent, self.thrown
        self.sent = self.thrown = None
        try:
            return self._flow.send(sent) if thrown is None else self._flow.throw(thrown)
        except StopIteration as done:
            self.result = done.value
        raise StopIteration


def run(flow: Flow[T], perform: Callable[[Any], Any]) -> T:
    """Run ``flow`` to its end, performing each effect with ``perform(effect)``."""
    stepper = _Stepper(flow)
    for effect in stepper:
        try:
            stepper.sent = perform(effect)
        except BaseException as exc:  # the flow decides, as a `with` block would
            stepper.thrown = exc
    return stepper.result  # type: ignore[no-any-return]


async def run_async(flow: Flow[T], perform: Callable[[Any], Awaitable[Any]]) -> T:
    """Run ``flow`` to its end, awaiting ``perform(effect)`` for each effect."""
    stepper = _Stepper(flow)
    for effect in stepper:
        try:
            stepper.sent = await perform(effect)
        except BaseException as exc:  # cancellation too: the flow's `finally` runs
            stepper.thrown = exc
    return stepper.result  # type: ignore[no-any-return]


def warn_caller(message: str, category: type[Warning]) -> None:
    """Warn at the caller of the SDK: the first frame outside this package.

    A flow runs a few frames below the public method (the driver's), so a
    fixed ``stacklevel`` would depend on how deep the flow is nested.
    """
    package = __name__.partition(".")[0]
    frame, stacklevel = sys._getframe(1), 2
    while frame.f_back is not None and _package_of(frame) == package:
        frame, stacklevel = frame.f_back, stacklevel + 1
    warnings.warn(message, category, stacklevel=stacklevel)


def _package_of(frame: Any) -> str:
    return str(frame.f_globals.get("__name__", "")).partition(".")[0]
