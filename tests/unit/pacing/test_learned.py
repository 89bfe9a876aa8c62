"""Limits learned from 429s (release.lua, AIMD) against a real Redis, on an injected clock."""

import pytest
import pytest_asyncio

from ezthrottle_server.common import keys
from ezthrottle_server.pacing.hints import TargetHints, read_hints
from ezthrottle_server.pacing.limiter import Limiter, PacingPolicy
from ezthrottle_server.pacing.overrides import apply_overrides, parse_overrides
from ezthrottle_server.pacing.scope import SHARED, Scope

T0 = 1_800_000_000_000.0
DOMAIN = "api.example:443"
SCOPE = Scope(DOMAIN)
REFUSED, OK = TargetHints(answer="429"), TargetHints(answer="ok")


@pytest_asyncio.fixture
async def limiter(redis):
    return Limiter(redis, PacingPolicy(), "iad")


async def rate(limiter: Limiter) -> tuple[float, str]:
    view = await limiter.describe(DOMAIN, SHARED, ["iad"])
    return view.rps, view.rps_source


@pytest.mark.asyncio
async def test_a_429_cuts_the_rate_once_per_second_and_successes_win_it_back(limiter, redis):
    await limiter.release(SCOPE, "j@1", REFUSED, now_ms=T0)
    assert await rate(limiter) == (pytest.approx(1.8), "learned")  # 0.9 of the default 2/s
    await limiter.release(SCOPE, "j@2", REFUSED, now_ms=T0 + 500)  # an answer to a send already on its way
    assert (await rate(limiter))[0] == pytest.approx(1.8)
    await limiter.release(SCOPE, "j@3", REFUSED, now_ms=T0 + 1000)
    assert (await rate(limiter))[0] == pytest.approx(1.62)

    for n in range(100):
        await limiter.release(SCOPE, f"ok@{n}", OK, now_ms=T0 + 2000 + n)
    assert await rate(limiter) == (pytest.approx(1.62 * 1.0017**100), "learned")  # slowly
    for n in range(100, 130):
        await limiter.release(SCOPE, f"ok@{n}", OK, now_ms=T0 + 2000 + n)
    assert await rate(limiter) == (2.0, "default")  # back to what it says: the lesson is forgotten
    assert not await redis.hexists(keys.pacing_limit(DOMAIN, SHARED), "learned_rps")


@pytest.mark.asyncio
async def test_a_target_that_advertises_more_than_it_enforces_is_believed_less(limiter, redis):
    await limiter.release(SCOPE, "j@1", TargetHints(rps=10.0, answer="ok"), now_ms=T0)
    assert await rate(limiter) == (10.0, "header")
    await limiter.release(SCOPE, "j@2", TargetHints(rps=10.0, answer="429"), now_ms=T0 + 10)
    assert await rate(limiter) == (pytest.approx(9.0), "learned")  # its headers keep saying 10


@pytest.mark.asyncio
async def test_the_operator_ceiling_still_applies(limiter, redis):
    await apply_overrides(redis, parse_overrides(f"domains:\n  {DOMAIN}: {{max_rps: 1}}\n"))
    await limiter.release(SCOPE, "j@0", TargetHints(rps=50.0, answer="ok"), now_ms=T0 - 10)  # the target claims 50
    await limiter.release(SCOPE, "j@1", REFUSED, now_ms=T0)
    rps, source = await rate(limiter)
    assert rps == pytest.approx(0.9) and source == "learned"  # cut from the ceiling, never above it


def test_answers_are_read_as_refused_ok_infrastructure_or_other():
    assert read_hints(429, {}, now_ms=0, retry_after_s=None, min_rps=0.01, max_pause_s=60).answer == "429"
    assert read_hints(201, {}, now_ms=0, retry_after_s=None, min_rps=0.01, max_pause_s=60).answer == "ok"
    assert read_hints(500, {}, now_ms=0, retry_after_s=None, min_rps=0.01, max_pause_s=60).answer == "http"
    assert read_hints(502, {}, now_ms=0, retry_after_s=None, min_rps=0.01, max_pause_s=60).answer == "infra"  # for the circuit
    assert read_hints(None, {}, now_ms=0, retry_after_s=None, min_rps=0.01, max_pause_s=60).answer == ""
