"""accept.lua: on one Redis, a submission that takes its job from the domain's limit in the same step."""

import pytest

from ezthrottle_server.common import job_index, keys, scripting
from ezthrottle_server.common.jobs import record_fields, validate_job
from ezthrottle_server.pacing.limiter import Limiter, PacingPolicy
from ezthrottle_server.pacing.scope import SHARED, Scope

DOMAIN = "api.example:443"
SCOPE = Scope(DOMAIN)
T0 = 1_800_000_000_000


async def accept(limiter, job_id: str, idem: str, now: int, *, inflight: int = 0):
    """What the edge's submit handler sends for a job due now in region iad (one partition)."""
    job = validate_job({"url": f"https://{DOMAIN}/charge"}, ["iad"])
    fields = record_fields(job, customer="acme", idempotent_key=idem, regions=["iad"], now_ms=now)
    flat = [x for kv in fields.items() for x in kv]
    submit_keys = [
        keys.idempotency(0, "acme", idem),
        keys.job(job_id),
        keys.delayed(0),
        keys.usage(0, "acme", "202611"),
        keys.queued(0),
        keys.job_index(0, "acme"),
        keys.region_stream(0, "iad"),
        keys.workflow_timers(0),
    ]
    index = [job_index.member(now, job_id, DOMAIN), 3600, job_index.too_old(now, 3600)]
    submit_args = [job_id, 3600, 0, now, -1, 3600, "acme", -1, len(fields), *index, -1, 0, *flat, "iad"]
    take_args = limiter.take_args(SCOPE, "acme", inflight=inflight, lease_ms=30_000, now_ms=now)
    return await limiter.accept_script(
        keys=[*submit_keys, *limiter.take_keys(SCOPE)], args=[len(submit_keys), len(submit_args), *submit_args, *take_args]
    )


def job_id(n: int) -> str:
    return keys.make_job_id(T0, f"{n:016x}", 0)


@pytest.mark.asyncio
async def test_a_new_job_of_an_idle_domain_is_written_and_leased_in_one_step_without_a_stream_entry(redis):
    limiter = Limiter(redis, PacingPolicy(), "iad")
    created, jid, lease, *_ = await accept(limiter, job_id(1), "k1", T0)
    assert (created, jid) == (1, job_id(1)) and lease.startswith(f"{job_id(1)}@")
    assert await redis.hget(keys.job(job_id(1)), "state") == "queued"
    assert await redis.zrange(keys.pacing_running(DOMAIN, SHARED, "iad"), 0, -1) == [lease]
    assert not await redis.exists(keys.region_stream(0, "iad"))  # the lease holds it, not a stream entry
    # and the ready set looks at the scope when the lease expires, should the node die first
    assert await redis.zscore(keys.pacing_ready("iad"), SCOPE.member) == T0 + 30_000


@pytest.mark.asyncio
async def test_a_duplicate_takes_nothing_and_a_job_that_must_wait_gets_its_stream_entry(redis):
    limiter = Limiter(redis, PacingPolicy(), "iad")
    _, _, lease, *_ = await accept(limiter, job_id(1), "k1", T0)
    limit_before = await redis.hgetall(keys.pacing_limit(DOMAIN, SHARED))
    assert await accept(limiter, job_id(2), "k1", T0 + 600) == [0, job_id(1)]  # a duplicate
    assert await redis.hgetall(keys.pacing_limit(DOMAIN, SHARED)) == limit_before  # its rate untouched
    assert await redis.zrange(keys.pacing_running(DOMAIN, SHARED, "iad"), 0, -1) == [lease]
    # 2/s: a second job within 500 ms is written and queued the usual way
    assert (await accept(limiter, job_id(3), "k3", T0 + 10))[:3] == [1, job_id(3), ""]
    assert await redis.zscore(keys.pacing_ready("iad"), SCOPE.member) == T0 + 30_000  # not moved: nothing taken
    assert [f["job"] for _, f in await redis.xrange(keys.region_stream(0, "iad"))] == [job_id(3)]


def test_accept_is_composed_from_files_submits_body_once_and_the_prelude_once():
    accept, submit = scripting.source("accept"), scripting.source("submit")
    body = scripting.source("common/_submit.lua")
    assert body in accept and body in submit and "--@include" not in accept + submit
    assert accept.count("take_job(ARGV[1]") == 1 and accept.count("local function now_ms()") == 1
    with pytest.raises(scripting.ScriptError):
        scripting.source("pacing/no_such_script")
