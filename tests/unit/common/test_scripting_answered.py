"""scripting.answered: a script call's parsed reply as a future, shielded without a task of its own."""

import asyncio

import pytest

from ezthrottle_server.common.scripting import answered

pytestmark = pytest.mark.asyncio


def _call() -> asyncio.Future:
    """A call under way, as a batcher's: a future its pipeline answers."""
    return asyncio.get_running_loop().create_future()


async def test_the_reply_is_parsed_and_a_batched_call_costs_no_task():
    call = _call()
    tasks = len(asyncio.all_tasks())
    reply = answered(call, lambda r: int(r) * 2)
    shielded = asyncio.shield(reply)
    assert len(asyncio.all_tasks()) == tasks  # neither the answer nor its shield made one
    call.set_result("21")
    assert await shielded == 42


async def test_a_failed_call_or_an_unparsable_reply_fails_the_answer():
    failed = _call()
    answer = answered(failed, int)
    failed.set_exception(ConnectionError("gone"))
    with pytest.raises(ConnectionError):
        await answer
    odd = _call()
    answer = answered(odd, int)
    odd.set_result("not a number")
    with pytest.raises(ValueError):
        await answer


async def test_a_coroutine_call_is_run():
    async def script() -> str:
        await asyncio.sleep(0)
        return "7"

    assert await answered(script(), int) == 7


async def test_cancelling_the_answer_cancels_the_call():
    call = _call()
    answer = answered(call, int)
    waiter = asyncio.ensure_future(answer)
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await asyncio.sleep(0)  # the callbacks run
    assert call.cancelled()


async def test_a_shielded_answer_outlives_its_cancelled_caller():
    call = _call()
    answer = answered(call, int)

    async def caller() -> int:
        return await asyncio.shield(answer)

    waiter = asyncio.ensure_future(caller())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not call.cancelled()
    call.set_result("3")
    assert await answer == 3
