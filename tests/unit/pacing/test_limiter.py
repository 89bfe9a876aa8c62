"""The pacing scripts against a real Redis, on an injected clock (``now_ms``)."""

import asyncio
import itertools
import time

import pytest
import pytest_asyncio

from ezthrottle_server.common import keys
from ezthrottle_server.pacing.hints import TargetHints
from ezthrottle_server.pacing.limiter import AHEAD_HALF_LIFE_S, BUSY, EMPTY, MAX_AHEAD_MS, OK, PAUSED, Limiter, PacingPolicy
from ezthrottle_server.pacing.overrides import apply_overrides, parse_overrides
from ezthrottle_server.pacing.scope import SHARED, Scope

pytestmark = pytest.mark.asyncio

T0 = 1_800_000_000_000.0
DOMAIN = "api.example:443"
SCOPE = Scope(DOMAIN)
LEASE = 30_000


@pytest_asyncio.fixture
async def limiter(redis):
    return Limiter(redis, PacingPolicy(), "iad")


async def configure(redis, text):
    await apply_overrides(redis, parse_overrides(text))


def jobs(prefix, n, customer="acme"):
    return [(f"{prefix}{i:04d}", customer) for i in range(n)]


async def run_until(limiter, scope, end_ms, *, inflight=0, want=32, start_ms=T0):
    """A node that wakes exactly when told: every grant's time, up to ``end_ms``."""
    now, sent = start_ms, []
    while now <= end_ms:
        g = await limiter.grant(scope, inflight=inflight, want=want, lease_ms=LEASE, now_ms=now)
        sent += [(now, j) for j in g.job_ids]
        if not g.waiting:
            break
        now = max(g.next_ms, now + 0.001)
    return sent


def max_in_window(times_ms, window_ms=1000.0):
    best, lo = 0, 0
    for hi, t in enumerate(times_ms):
        while t - times_ms[lo] >= window_ms:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def test_default_rate_is_two_per_second_with_no_burst(limiter):
    await limiter.admit(SCOPE, jobs("j", 100), now_ms=T0)
    sent = await run_until(limiter, SCOPE, T0 + 10_000)
    times = [t for t, _ in sent]
    assert 19 <= len(times) <= 21  # 2/s over 10 s, 1% under
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 500  # never faster than 2/s
    assert max_in_window(times) == 2
    assert [j for _, j in sent] == [f"j{i:04d}" for i in range(len(sent))]  # in order


async def test_a_job_waits_when_the_rate_is_used_up(limiter):
    await limiter.admit(SCOPE, jobs("j", 3), now_ms=T0)
    first = await limiter.grant(SCOPE, inflight=0, want=10, lease_ms=LEASE, now_ms=T0)
    assert first.status == OK and first.job_ids == ["j0000"] and first.waiting == 2
    assert T0 + 495 <= first.next_ms <= T0 + 505
    early = await limiter.grant(SCOPE, inflight=0, want=10, lease_ms=LEASE, now_ms=first.next_ms - 20)
    assert early.job_ids == [] and early.next_ms == first.next_ms
    on_time = await limiter.grant(SCOPE, inflight=0, want=10, lease_ms=LEASE, now_ms=first.next_ms)
    assert on_time.job_ids == ["j0001"]


async def test_burst_lets_that_many_go_back_to_back(redis, limiter):
    await configure(redis, f"domains:\n  {DOMAIN}: {{rps: 10, burst: 3, max_concurrent: 10}}\n")
    await limiter.admit(SCOPE, jobs("j", 20), now_ms=T0)
    g = await limiter.grant(SCOPE, inflight=0, want=10, lease_ms=LEASE, now_ms=T0)
    assert len(g.job_ids) == 3
    sent = await run_until(limiter, SCOPE, T0 + 2_000, start_ms=g.next_ms)
    assert 19 <= len(g.job_ids) + len(sent) <= 20 + 3
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(sent)]
    assert min(gaps) >= 100  # after the burst, 10/s


async def test_per_node_concurrency_cap(redis, limiter):
    await configure(redis, f"domains:\n  {DOMAIN}: {{rps: 100, burst: 50}}\n")
    await limiter.admit(SCOPE, jobs("j", 10), now_ms=T0)
    g = await limiter.grant(SCOPE, inflight=0, want=10, lease_ms=LEASE, now_ms=T0)
    assert len(g.job_ids) == 2 and g.status == BUSY  # default: 2 in flight per node
    g = await limiter.grant(SCOPE, inflight=2, want=10, lease_ms=LEASE, now_ms=T0 + 1)
    assert g.job_ids == [] and g.status == BUSY
    g = await limiter.grant(SCOPE, inflight=1, want=10, lease_ms=LEASE, now_ms=T0 + 2)
    assert len(g.job_ids) == 1
    # another node has its own cap
    g = await limiter.grant(SCOPE, inflight=0, want=10, lease_ms=LEASE, now_ms=T0 + 3)
    assert len(g.job_ids) == 2


async def test_headers_change_the_limit_for_every_node(limiter):
    await limiter.admit(SCOPE, jobs("j", 60), now_ms=T0)
    g = await limiter.grant(SCOPE, inflight=0, want=10, lease_ms=LEASE, now_ms=T0)
    await limiter.release(SCOPE, g.leases[0], TargetHints(rps=20.0, max_concurrent=5), now_ms=T0 + 10)
    view = await limiter.describe(DOMAIN)
    assert (view.rps, view.rps_source, view.max_concurrent, view.max_concurrent_source) == (20, "header", 5, "header")
    # the next grant is due one 20/s interval after the last one, not 500 ms
    g = await limiter.grant(SCOPE, inflight=0, want=10, lease_ms=LEASE, now_ms=T0 + 51)
    assert len(g.job_ids) == 1
    sent = await run_until(limiter, SCOPE, T0 + 1_051, inflight=0, start_ms=g.next_ms)
    assert 19 <= len(sent) <= 21
    g = await limiter.grant(SCOPE, inflight=4, want=10, lease_ms=LEASE, now_ms=T0 + 5_000)
    assert len(g.job_ids) == 1  # cap 5 per node now


async def test_header_rates_are_clamped_to_the_ceiling(redis, limiter):
    await limiter.release(SCOPE, "none", TargetHints(rps=5000.0, max_concurrent=10_000), now_ms=T0)
    view = await limiter.describe(DOMAIN)
    assert (view.rps, view.rps_clamped, view.max_concurrent, view.max_concurrent_clamped) == (100, True, 64, True)
    await configure(redis, f"domains:\n  {DOMAIN}: {{max_rps: 500, max_concurrent_ceiling: 4}}\n")
    view = await limiter.describe(DOMAIN)
    assert (view.rps, view.ceiling_rps, view.max_concurrent) == (500, 500, 4)


async def test_limit_sources_default_config_header_and_header_expiry(redis):
    limiter = Limiter(redis, PacingPolicy(header_ttl_s=60), "iad")
    view = await limiter.describe(DOMAIN)
    assert (view.rps, view.rps_source, view.max_concurrent, view.max_concurrent_source) == (2, "default", 2, "default")
    await configure(redis, f"domains:\n  {DOMAIN}: {{rps: 5, max_concurrent: 3}}\n")
    view = await limiter.describe(DOMAIN)
    assert (view.rps, view.rps_source, view.max_concurrent_source) == (5, "config", "config")
    await limiter.release(SCOPE, "none", TargetHints(rps=0.5), now_ms=T0)
    raw = await redis.hgetall(keys.pacing_limit(DOMAIN, SHARED))
    assert float(raw["hdr_rps"]) == 0.5
    g_view = await limiter._scripts["describe"](keys=limiter._keys(SCOPE), args=limiter.policy.args(T0 + 59_000))
    assert (g_view[0], g_view[1], g_view[3]) == ("0.5", "header", "config")
    g_view = await limiter._scripts["describe"](keys=limiter._keys(SCOPE), args=limiter.policy.args(T0 + 61_000))
    assert (g_view[0], g_view[1]) == ("5", "config")  # the header lapsed


async def test_retry_after_pauses_the_scope_and_only_extends(limiter):
    await limiter.admit(SCOPE, jobs("j", 5), now_ms=T0)
    g = await limiter.grant(SCOPE, inflight=0, want=10, lease_ms=LEASE, now_ms=T0)
    await limiter.release(SCOPE, g.leases[0], TargetHints(pause_until_ms=int(T0) + 3_000), now_ms=T0 + 5)
    await limiter.release(SCOPE, "other", TargetHints(pause_until_ms=int(T0) + 1_000), now_ms=T0 + 6)
    g = await limiter.grant(SCOPE, inflight=0, want=10, lease_ms=LEASE, now_ms=T0 + 2_999)
    assert g.status == PAUSED and g.job_ids == [] and g.next_ms == int(T0) + 3_000
    assert await limiter.redis.zscore(limiter.ready_key, SCOPE.member) == int(T0) + 3_000
    g = await limiter.grant(SCOPE, inflight=0, want=10, lease_ms=LEASE, now_ms=T0 + 3_000)
    assert g.job_ids == ["j0001"]


async def test_customers_are_served_round_robin(limiter):
    await limiter.admit(SCOPE, jobs("a", 100, "flooder"), now_ms=T0)
    sent = await run_until(limiter, SCOPE, T0 + 2_100)  # a few of A's go first
    assert all(j.startswith("a") for _, j in sent)
    await limiter.admit(SCOPE, jobs("b", 3, "patient"), now_ms=T0 + 2_200)
    await limiter.admit(SCOPE, jobs("c", 1, "third"), now_ms=T0 + 2_200)
    more = await run_until(limiter, SCOPE, T0 + 6_000, start_ms=T0 + 2_200)
    order = [j[0] for _, j in more]
    assert order[:6].count("b") >= 2 and "c" in order[:4]
    assert order.index("b") <= 1 and order.index("c") <= 2


async def test_admission_is_idempotent(limiter):
    assert await limiter.admit(SCOPE, jobs("j", 3), now_ms=T0) == 3
    assert await limiter.admit(SCOPE, jobs("j", 3), now_ms=T0 + 1) == 0


async def test_a_jobs_next_attempt_queues_while_its_last_lease_is_released(limiter):
    await limiter.admit(SCOPE, jobs("j", 1), now_ms=T0)
    first = await limiter.grant(SCOPE, inflight=0, want=1, lease_ms=LEASE, now_ms=T0)
    # the retry is back through the stream before the sending node released its lease
    assert await limiter.admit(SCOPE, jobs("j", 1), now_ms=T0 + 1) == 1
    await limiter.release(SCOPE, first.leases[0], now_ms=T0 + 2)
    second = await limiter.grant(SCOPE, inflight=0, want=1, lease_ms=LEASE, now_ms=T0 + 600)
    assert second.job_ids == ["j0000"] and second.leases != first.leases


async def test_an_expired_lease_goes_back_to_the_front(limiter):
    await limiter.admit(SCOPE, jobs("j", 3), now_ms=T0)
    g = await limiter.grant(SCOPE, inflight=0, want=1, lease_ms=1_000, now_ms=T0)
    assert g.job_ids == ["j0000"]
    [lease] = g.leases
    # renewed while its node lives
    assert await limiter.renew(SCOPE, [lease], 1_000, now_ms=T0 + 500) == 1
    score = await limiter.redis.zscore(keys.pacing_running(DOMAIN, SHARED, "iad"), lease)
    assert score == T0 + 1_500
    await limiter.redis.zadd(keys.pacing_running(DOMAIN, SHARED, "iad"), {lease: T0 + 1_000})
    g = await limiter.grant(SCOPE, inflight=0, want=1, lease_ms=1_000, now_ms=T0 + 1_001)
    assert g.recovered == 1 and g.job_ids == ["j0000"]  # its node died: next in line, first


async def test_a_released_job_put_back_goes_first(limiter):
    await limiter.admit(SCOPE, jobs("j", 3), now_ms=T0)
    g = await limiter.grant(SCOPE, inflight=0, want=1, lease_ms=LEASE, now_ms=T0)
    await limiter.release(SCOPE, g.leases[0], requeue=True, now_ms=T0 + 1)
    g = await limiter.grant(SCOPE, inflight=0, want=1, lease_ms=LEASE, now_ms=T0 + 600)
    assert g.job_ids == ["j0000"]


async def test_the_ready_set_follows_the_queue(limiter):
    ready = limiter.ready_key
    await limiter.admit(SCOPE, jobs("j", 1), now_ms=T0)
    assert await limiter.redis.zscore(ready, SCOPE.member) is not None
    g = await limiter.grant(SCOPE, inflight=0, want=5, lease_ms=1_000, now_ms=T0)
    assert g.waiting == 0 and g.next_ms == int(T0) + 1_000  # kept to look after the lease
    assert await limiter.redis.zscore(ready, SCOPE.member) == int(T0) + 1_000
    await limiter.release(SCOPE, g.leases[0], now_ms=T0 + 10)
    g = await limiter.grant(SCOPE, inflight=0, want=5, lease_ms=1_000, now_ms=T0 + 20)
    assert g.status == EMPTY and g.next_ms == -1
    assert await limiter.redis.zscore(ready, SCOPE.member) is None
    # a job admitted while a stale view drops the scope puts it back
    await limiter.admit(SCOPE, jobs("k", 1), now_ms=T0 + 30)
    await limiter._reindex(SCOPE, waiting=0, next_ms=-1)
    assert await limiter.redis.zscore(ready, SCOPE.member) is not None


async def test_per_customer_domains_keep_one_limit_per_customer(redis, limiter):
    await configure(redis, f"domains:\n  {DOMAIN}: {{per_customer: true}}\n")
    scopes = await limiter.scopes_for([(DOMAIN, "acme"), (DOMAIN, "globex"), ("other.example:443", "acme")])
    assert scopes[(DOMAIN, "acme")] == Scope(DOMAIN, "acme")
    assert scopes[(DOMAIN, "globex")] == Scope(DOMAIN, "globex")
    assert scopes[("other.example:443", "acme")] == Scope("other.example:443", SHARED)
    a, g = Scope(DOMAIN, "acme"), Scope(DOMAIN, "globex")
    await limiter.admit(a, jobs("a", 10, "acme"), now_ms=T0)
    await limiter.admit(g, jobs("g", 10, "globex"), now_ms=T0)
    await limiter.release(a, "none", TargetHints(rps=10.0), now_ms=T0)  # acme's own header
    sent_a = await run_until(limiter, a, T0 + 999)
    sent_g = await run_until(limiter, g, T0 + 999)
    assert len(sent_a) == 10 and len(sent_g) == 2


async def test_customers_are_served_in_turn_across_regions(redis):
    iad = Limiter(redis, PacingPolicy(), "iad", ["iad", "lax"])
    lax = Limiter(redis, PacingPolicy(), "lax", ["iad", "lax"])
    await iad.admit(SCOPE, jobs("a", 50, "flooder"), now_ms=T0)
    g = await iad.grant(SCOPE, inflight=0, want=5, lease_ms=LEASE, now_ms=T0)
    assert g.job_ids == ["a0000"]
    await lax.admit(SCOPE, jobs("b", 1, "patient"), now_ms=T0 + 100)
    slot = g.next_ms
    # at the next slot iad asks first, but lax holds the scope's first job: iad leaves the token...
    g = await iad.grant(SCOPE, inflight=0, want=5, lease_ms=LEASE, now_ms=slot)
    assert g.job_ids == [] and g.next_ms == slot + 50  # ...and looks again after the grace
    g = await lax.grant(SCOPE, inflight=0, want=5, lease_ms=LEASE, now_ms=slot + 1)
    assert g.job_ids == ["b0000"]
    g = await iad.grant(SCOPE, inflight=0, want=5, lease_ms=LEASE, now_ms=slot + 50)
    assert g.job_ids == [] and g.next_ms > slot + 400  # the token went; iad is first for the next one


async def test_a_token_the_first_region_leaves_goes_to_another_after_the_grace(redis):
    iad = Limiter(redis, PacingPolicy(), "iad", ["iad", "lax"])
    lax = Limiter(redis, PacingPolicy(), "lax", ["iad", "lax"])
    await lax.admit(SCOPE, jobs("b", 1, "patient"), now_ms=T0)  # lax's node is dead
    await iad.admit(SCOPE, jobs("a", 5, "flooder"), now_ms=T0 + 1)
    g = await iad.grant(SCOPE, inflight=0, want=5, lease_ms=LEASE, now_ms=T0 + 2)
    assert g.job_ids == ["a0000"]  # iad's first job was first (tie on tags, then job id)
    slot = g.next_ms - 50  # lax is first now, so iad is told to look after the grace
    g = await iad.grant(SCOPE, inflight=0, want=5, lease_ms=LEASE, now_ms=slot)
    assert g.job_ids == []
    g = await iad.grant(SCOPE, inflight=0, want=5, lease_ms=LEASE, now_ms=slot + 49)
    assert g.job_ids == [] and g.next_ms == slot + 50  # the grace runs from iad's first ask
    g = await iad.grant(SCOPE, inflight=0, want=5, lease_ms=LEASE, now_ms=slot + 50)
    assert g.job_ids == ["a0001"]  # nobody in lax claimed it: iad does not wait forever


async def test_at_a_high_rate_the_grace_is_half_an_interval(redis):
    """At 100/s a 50 ms grace would lose five tokens whenever the rightful region looks late."""
    iad = Limiter(redis, PacingPolicy(), "iad", ["iad", "lax"])
    lax = Limiter(redis, PacingPolicy(), "lax", ["iad", "lax"])
    await configure(redis, "domains:\n  api.example:443: {rps: 100}\n")
    await lax.admit(SCOPE, jobs("b", 1, "patient"), now_ms=T0)  # lax's node looks late
    await iad.admit(SCOPE, jobs("a", 5, "flooder"), now_ms=T0 + 1)
    g = await iad.grant(SCOPE, inflight=0, want=5, lease_ms=LEASE, now_ms=T0 + 2)
    assert g.job_ids == ["a0000"]
    slot = g.next_ms - 5  # T = 10.1 ms: iad is told to look half an interval after the slot
    g = await iad.grant(SCOPE, inflight=0, want=5, lease_ms=LEASE, now_ms=slot)
    assert g.job_ids == [] and g.next_ms <= slot + 6
    g = await iad.grant(SCOPE, inflight=0, want=5, lease_ms=LEASE, now_ms=slot + 6)
    assert g.job_ids == ["a0001"]  # nobody in lax claimed it within half an interval


async def test_a_raced_job_has_one_tag_in_every_region(redis):
    iad = Limiter(redis, PacingPolicy(), "iad", ["iad", "lax"])
    lax = Limiter(redis, PacingPolicy(), "lax", ["iad", "lax"])
    await configure(redis, "domains:\n  api.example:443: {rps: 100, burst: 10}\n")
    await lax.admit(SCOPE, jobs("r", 3), now_ms=T0)  # lax queued the raced jobs first
    await iad.admit(SCOPE, jobs("r", 3), now_ms=T0 + 1)
    g = await iad.grant(SCOPE, inflight=0, want=1, lease_ms=LEASE, now_ms=T0 + 2)
    assert g.job_ids == ["r0000"]  # iad's copy is as early as lax's: no wait for lax's turn
    g = await lax.grant(SCOPE, inflight=0, want=1, lease_ms=LEASE, now_ms=T0 + 3)
    assert g.job_ids == ["r0000"]


async def test_a_late_send_moves_the_schedule_back(limiter):
    await limiter.admit(SCOPE, jobs("j", 3), now_ms=T0)
    g = await limiter.grant(SCOPE, inflight=0, want=1, lease_ms=LEASE, now_ms=T0)
    await limiter.report_late(SCOPE, 40.0, now_ms=T0 + 40)  # the send left 40 ms after its grant
    g2 = await limiter.grant(SCOPE, inflight=0, want=1, lease_ms=LEASE, now_ms=g.next_ms)
    assert g2.job_ids == [] and g2.next_ms == g.next_ms + 40


async def test_sends_that_left_late_together_move_the_schedule_once(redis, limiter):
    await configure(redis, "domains:\n  api.example:443: {burst: 3, max_concurrent: 3}\n")
    await limiter.admit(SCOPE, jobs("j", 6), now_ms=T0)
    g = await limiter.grant(SCOPE, inflight=0, want=3, lease_ms=LEASE, now_ms=T0)
    assert len(g.job_ids) == 3  # a burst, all three sends leave 40 ms late
    for _ in g.job_ids:
        await limiter.report_late(SCOPE, 40.0, now_ms=T0 + 40)
    g2 = await limiter.grant(SCOPE, inflight=0, want=3, lease_ms=LEASE, now_ms=T0 + 40)
    assert g2.job_ids == [] and g2.next_ms <= g.next_ms + 40  # at most once, not 3 x 40 ms


async def test_an_idle_domains_first_token_still_goes_in_fair_order(redis):
    iad = Limiter(redis, PacingPolicy(), "iad", ["iad", "lax"])
    lax = Limiter(redis, PacingPolicy(), "lax", ["iad", "lax"])
    await lax.admit(SCOPE, jobs("a", 1, "patient"), now_ms=T0)
    await iad.admit(SCOPE, jobs("b", 3, "flooder"), now_ms=T0 + 1)
    g = await iad.grant(SCOPE, inflight=0, want=5, lease_ms=LEASE, now_ms=T0 + 2)
    assert g.job_ids == [] and g.next_ms == int(T0) + 52  # lax's job is older: lax's turn
    g = await lax.grant(SCOPE, inflight=0, want=5, lease_ms=LEASE, now_ms=T0 + 3)
    assert g.job_ids == ["a0000"]


async def test_one_customers_earlier_job_in_another_region_does_not_hold_a_region_back(redis):
    """Fairness is between customers: one customer's jobs spread over regions need not pass the turn at each token."""
    iad = Limiter(redis, PacingPolicy(), "iad", ["iad", "lax"])
    lax = Limiter(redis, PacingPolicy(), "lax", ["iad", "lax"])
    await lax.admit(SCOPE, jobs("a", 1, "flooder"), now_ms=T0)  # earlier, and lax's node looks late
    await iad.admit(SCOPE, jobs("b", 3, "flooder"), now_ms=T0 + 1)
    g = await iad.grant(SCOPE, inflight=0, want=5, lease_ms=LEASE, now_ms=T0 + 2)
    assert g.job_ids == ["b0000"]  # at once, not after the hand-over grace
    g = await lax.grant(SCOPE, inflight=0, want=5, lease_ms=LEASE, now_ms=g.next_ms)
    assert g.job_ids == ["a0000"]  # lax is still first for the next token: its job is the oldest
    # a granted job's note of its customer is gone once no queue holds it
    assert set(await redis.hkeys(keys.pacing_fair(DOMAIN, SHARED))) == {"flooder", "~v", "j:b0001", "j:b0002"}


async def test_another_customers_job_behind_a_regions_head_still_holds_the_turn(redis):
    """Only the same customer's earlier jobs may be passed: another customer's job queued behind
    another region's head (of the first customer) is still ahead in turn (bench.pacing's fairness)."""
    iad = Limiter(redis, PacingPolicy(), "iad", ["iad", "lax"])
    lax = Limiter(redis, PacingPolicy(), "lax", ["iad", "lax"])
    await lax.admit(SCOPE, jobs("a", 1, "flooder"), now_ms=T0)  # lax: the flooder's a0000, then...
    await iad.admit(SCOPE, jobs("b", 3, "flooder"), now_ms=T0 + 1)  # iad: the flooder's b0000..b0002
    await lax.admit(SCOPE, jobs("p", 1, "patient"), now_ms=T0 + 2)  # ...lax: the patient's p0000, behind a0000
    tags = dict(await redis.zrange(keys.pacing_wait(DOMAIN, SHARED, "lax"), 0, -1, withscores=True))
    first_iad = (await redis.zrange(keys.pacing_wait(DOMAIN, SHARED, "iad"), 0, 0, withscores=True))[0][1]
    assert tags["p0000"] < first_iad  # the patient's job is ahead of iad's first in turn
    g = await iad.grant(SCOPE, inflight=0, want=5, lease_ms=LEASE, now_ms=T0 + 3)
    assert g.job_ids == []  # iad may pass the flooder's a0000, not the patient's p0000 behind it
    g = await lax.grant(SCOPE, inflight=0, want=5, lease_ms=LEASE, now_ms=T0 + 4)
    assert g.job_ids == ["a0000"]


async def test_a_newcomer_is_not_put_behind_jobs_skipped_out_of_turn(redis):
    iad = Limiter(redis, PacingPolicy(), "iad", ["iad", "lax"])
    lax = Limiter(redis, PacingPolicy(), "lax", ["iad", "lax"])
    await lax.admit(SCOPE, jobs("a", 1, "flooder"), now_ms=T0)  # lax's node is slow
    await iad.admit(SCOPE, jobs("b", 1, "flooder"), now_ms=T0 + 1)
    g = await iad.grant(SCOPE, inflight=0, want=5, lease_ms=LEASE, now_ms=T0 + 2)
    assert g.job_ids == ["b0000"]  # out of turn (the same customer's a0000 is earlier); a0000 still waits
    # the flooder's next job must not count as new (the virtual time stays at a0000)...
    await iad.admit(SCOPE, jobs("c", 1, "flooder"), now_ms=T0 + 60)
    await iad.admit(SCOPE, jobs("p", 1, "patient"), now_ms=T0 + 61)
    slot = T0 + 2 + 505
    g = await iad.grant(SCOPE, inflight=0, want=5, lease_ms=LEASE, now_ms=slot)
    assert g.job_ids == []  # lax's job is still first: iad waits out the grace again
    g = await iad.grant(SCOPE, inflight=0, want=5, lease_ms=LEASE, now_ms=g.next_ms)
    assert g.job_ids == ["p0000"]  # ...so the newcomer goes before it


# -- take.lua: a job accepted by a node goes at once when its scope is idle ------------


async def take(limiter, job, now, *, customer="acme", inflight=0, scope=SCOPE, lease_ms=LEASE):
    return await limiter.take(scope, job, customer, inflight=inflight, lease_ms=lease_ms, now_ms=now)


async def test_an_idle_scope_leases_an_accepted_job_at_once_and_counts_it_against_the_rate(limiter):
    lease = await take(limiter, "t1", T0)
    assert lease == "t1@0"  # always: a node that lost the reply releases it without knowing it (grants count from 1)
    running = await limiter.redis.zrange(keys.pacing_running(DOMAIN, SHARED, "iad"), 0, -1, withscores=True)
    assert running == [(lease, T0 + LEASE)]  # held like a grant: recovered if its node dies
    assert await take(limiter, "t2", T0 + 10) is None  # 2/s: the rate is spent for 500 ms
    await limiter.admit(SCOPE, jobs("j", 1), now_ms=T0 + 10)
    g = await limiter.grant(SCOPE, inflight=1, want=5, lease_ms=LEASE, now_ms=T0 + 10)
    assert g.job_ids == [] and T0 + 495 <= g.next_ms <= T0 + 510  # a queued job sees the take's send


async def test_take_leaves_a_job_to_the_queue_when_anything_waits_or_the_scope_may_not_send(redis, limiter):
    await limiter.admit(SCOPE, jobs("j", 1), now_ms=T0)
    assert await take(limiter, "t1", T0) is None  # a waiting job goes first
    g = await limiter.grant(SCOPE, inflight=0, want=5, lease_ms=LEASE, now_ms=T0)
    assert g.job_ids == ["j0000"]  # and was not overtaken
    await limiter.release(SCOPE, g.leases[0], TargetHints(pause_until_ms=int(T0) + 3_000), now_ms=T0 + 5)
    assert await take(limiter, "t2", T0 + 1_000) is None  # paused
    assert await take(limiter, "t3", T0 + 3_000, inflight=2) is None  # the node is at its cap (2 by default)
    assert await take(limiter, "t4", T0 + 3_000, inflight=1) is not None
    other_region = Limiter(redis, PacingPolicy(), "lax", ["iad", "lax"])
    both = Limiter(redis, PacingPolicy(), "iad", ["iad", "lax"])
    await other_region.admit(SCOPE, jobs("l", 1), now_ms=T0 + 4_000)
    assert await take(both, "t5", T0 + 4_000) is None  # another region's job waits: it goes first
    assert await redis.zrange(keys.pacing_running(DOMAIN, SHARED, "iad"), 0, -1) == [
        "t4@0"
    ]  # j0000's was released; nothing else was leased


async def test_an_expired_lease_is_recovered_before_anything_is_taken(limiter):
    lease = await take(limiter, "t1", T0, lease_ms=1_000)
    assert lease is not None
    assert await take(limiter, "t2", T0 + 1_001) is None  # t1's node died: t1 goes first
    g = await limiter.grant(SCOPE, inflight=0, want=5, lease_ms=LEASE, now_ms=T0 + 1_001)
    assert g.recovered == 1 and g.job_ids == ["t1"]


async def test_a_refunded_take_gives_the_rate_back(limiter):
    lease = await take(limiter, "t1", T0)
    await limiter.release(SCOPE, lease, refund=True, now_ms=T0 + 1)  # its submission was a duplicate
    assert await limiter.redis.zcard(keys.pacing_running(DOMAIN, SHARED, "iad")) == 0
    assert await take(limiter, "t2", T0 + 2) is not None  # the token came back
    assert await take(limiter, "t3", T0 + 3) is None  # and only one
    lease = await take(limiter, "t4", T0 + 600)
    await limiter.release(SCOPE, lease, now_ms=T0 + 601)  # sent: no refund
    assert await take(limiter, "t5", T0 + 602) is None


async def test_a_taken_job_keeps_fair_order_with_the_queue(limiter):
    await configure(limiter.redis, f"domains:\n  {DOMAIN}: {{rps: 1000, max_concurrent: 100}}\n")
    assert await take(limiter, "a-taken", T0, customer="flooder") is not None
    await limiter.admit(SCOPE, jobs("a", 5, "flooder"), now_ms=T0 + 1)
    await limiter.admit(SCOPE, jobs("b", 1, "patient"), now_ms=T0 + 1)
    sent = [j for _, j in await run_until(limiter, SCOPE, T0 + 1_000, start_ms=T0 + 2)]
    # the flooder's taken job counted as served: the newcomer goes in turn, not behind its backlog
    assert sent == ["a0000", "b0000", "a0001", "a0002", "a0003", "a0004"]


# -- space.lua: the moment of sending ------------------------------------------------


async def test_at_most_n_sends_leave_in_any_window_of_one_second_plus_the_margin(limiter):
    # default 2/s, margin 20 ms: the third send waits for the first to be 1,020 ms old
    assert await limiter.space(SCOPE, "a@1", now_ms=T0) == 0
    assert await limiter.space(SCOPE, "b@1", now_ms=T0 + 10) == 0
    assert await limiter.space(SCOPE, "c@1", now_ms=T0 + 500) == 520
    assert await limiter.space(SCOPE, "c@1", now_ms=T0 + 1020) == 0


async def test_a_send_whose_answer_came_back_late_is_recorded_again_as_it_leaves(redis):
    # tolerance -1 ms: every answer counts as late, as on a loop too busy to resume the send at once
    limiter = Limiter(redis, PacingPolicy(tolerance_ms=-1.0), "iad")
    assert await limiter.until_spaced(SCOPE, "a@1", max_wait_s=1.0) == 0.0
    # The record space.lua made is older than this (same clock); the move goes to Redis in the next loop turn's batch,
    # so it may well be done before any read of ours (reading the first record here raced it).
    returned_ms = time.time() * 1000
    sent = keys.pacing_sent(DOMAIN, SHARED)
    async with asyncio.timeout(5):
        while (await redis.zscore(sent, "a@1") or 0.0) < returned_ms:
            await asyncio.sleep(0.001)
    # moved later, past the moment the send was let go: the sends after it count from when it left
    assert await redis.zcard(sent) == 1


async def test_a_send_recorded_ahead_counts_from_then_and_keeps_the_log_alive_that_much_longer(limiter, redis):
    # ahead: how long answers lately took to come back to the sender; the record is when the send will leave
    sent = keys.pacing_sent(DOMAIN, SHARED)
    assert await limiter.space(SCOPE, "a@1", now_ms=T0, ahead_ms=40) == 0
    assert await redis.zscore(sent, "a@1") == T0 + 40
    assert await redis.pttl(sent) > 1_020 + 40 + 1_000 - 100
    assert await limiter.space(SCOPE, "b@1", now_ms=T0 + 10, ahead_ms=40) == 0
    # default 2/s: the third send waits for the first to be 1,020 ms old, counted from its record
    assert await limiter.space(SCOPE, "c@1", now_ms=T0 + 500) == 560
    assert await limiter.space(SCOPE, "c@1", now_ms=T0 + 1_059) == 1
    assert await limiter.space(SCOPE, "c@1", now_ms=T0 + 1_060) == 0


async def test_answers_that_came_back_slowly_make_the_next_sends_recorded_ahead_and_not_again(redis):
    limiter = Limiter(redis, PacingPolicy(tolerance_ms=5.0), "iad")
    sent = keys.pacing_sent(DOMAIN, SHARED)
    limiter._ahead = (200.0, time.perf_counter())  # as after an answer that took 200 ms on a busy loop
    seconds, micros = await redis.time()
    before_ms = seconds * 1000 + micros / 1000
    assert await limiter.until_spaced(SCOPE, "a@1", max_wait_s=1.0) == 0.0
    recorded = await redis.zscore(sent, "a@1")
    assert before_ms + 150 <= recorded <= before_ms + 200 + 1_000
    await asyncio.sleep(0.05)
    assert not limiter._recording  # answered sooner than recorded for: not recorded again
    assert await redis.zscore(sent, "a@1") == recorded


async def test_the_lead_fades_by_half_every_half_second_and_follows_a_slower_answer(redis):
    limiter = Limiter(redis, PacingPolicy(), "iad")
    assert limiter.ahead_ms() == 0.0
    t = time.perf_counter()
    limiter._ahead = (200.0, t)
    assert limiter.ahead_ms(t) == 200.0
    assert limiter.ahead_ms(t + AHEAD_HALF_LIFE_S) == pytest.approx(100.0)
    assert limiter.ahead_ms(t + 10 * AHEAD_HALF_LIFE_S) < 0.2  # a quiet node forgets one slow answer in seconds
    limiter._ahead = (0.0, 0.0)
    assert await limiter.until_spaced(SCOPE, "a@1", max_wait_s=1.0) == 0.0
    assert 0.0 < limiter.ahead_ms() <= MAX_AHEAD_MS  # the answer just taken: the slowest recent one


async def test_a_late_send_moved_to_when_it_left_keeps_the_log_alive_that_much_longer(limiter, redis):
    # respace.lua (what until_spaced runs for a late answer) moves the record without resolving limits again
    assert await limiter.space(SCOPE, "a@1", now_ms=T0) == 0
    sent = keys.pacing_sent(DOMAIN, SHARED)
    before_ms = await redis.pttl(sent)
    assert await limiter._respace(SCOPE, "a@1", now_ms=T0 + 300) == 1
    assert await redis.zscore(sent, "a@1") == T0 + 300
    assert await redis.pttl(sent) > before_ms + 250  # outlives the moved record as it outlived it where it was
    assert await limiter._respace(SCOPE, "gone@1", now_ms=T0 + 300) == 0  # no record: nothing written
    assert await redis.zcard(sent) == 1


async def test_a_late_send_whose_record_is_gone_is_recorded_anew(redis):
    # the record aged out (or the log expired) before the late answer's second record: space.lua records it, as before respace.lua
    limiter = Limiter(redis, PacingPolicy(), "iad")
    sent = keys.pacing_sent(DOMAIN, SHARED)
    limiter._record_again(SCOPE, "a@1")
    async with asyncio.timeout(5):
        while await redis.zscore(sent, "a@1") is None:
            await asyncio.sleep(0.001)
    assert await redis.zcard(sent) == 1


async def test_a_scopes_keys_are_written_once_and_the_kept_ones_are_bounded(redis, monkeypatch):
    from ezthrottle_server.pacing import limiter as limiter_module

    limiter = Limiter(redis, PacingPolicy(), "iad", regions=["iad", "fra", "sin"])
    shared, acme = Scope(DOMAIN), Scope(DOMAIN, "acme")
    first = limiter._keys(shared)
    assert first == (
        keys.pacing_conf(DOMAIN), keys.pacing_limit(DOMAIN, SHARED), keys.pacing_wait(DOMAIN, SHARED, "iad"),
        keys.pacing_fair(DOMAIN, SHARED), keys.pacing_running(DOMAIN, SHARED, "iad"),
        keys.pacing_wait(DOMAIN, SHARED, "fra"), keys.pacing_wait(DOMAIN, SHARED, "sin"),
    )  # fmt: skip
    assert limiter._keys(shared) is first  # kept, not written again
    assert limiter._keys(acme)[1] == keys.pacing_limit(DOMAIN, "acme")
    fra = limiter._keys(shared, "fra")  # another region's view of the same scope: its own queue and leases first
    own = (keys.pacing_wait(DOMAIN, SHARED, "fra"), keys.pacing_fair(DOMAIN, SHARED), keys.pacing_running(DOMAIN, SHARED, "fra"))
    assert fra[2:5] == own
    assert set(fra[5:]) == {keys.pacing_wait(DOMAIN, SHARED, "iad"), keys.pacing_wait(DOMAIN, SHARED, "sin")}
    monkeypatch.setattr(limiter_module, "SCOPE_KEYS_KEPT", 5)
    for i in range(12):  # many scopes (one per customer): the kept keys stay under the bound, each still right
        scope = Scope(DOMAIN, f"c{i}")
        assert limiter._keys(scope)[1] == keys.pacing_limit(DOMAIN, f"c{i}")
        assert len(limiter._scope_keys) <= 5
    assert limiter._keys(shared) == first


async def test_the_policys_arguments_are_the_clock_then_the_defaults():
    policy = PacingPolicy(default_rps=3.0, max_concurrent=7, tolerance_ms=4.0)
    assert policy.args() == ["", "3.0", 2, "100.0", 7, 3_600_000, "0.01", "4.0", "50.0"]
    assert policy.args(T0) == [repr(T0), *policy.args()[1:]]
    a = policy.args()
    a.append("x")  # a caller's list is its own
    assert policy.args() == ["", "3.0", 2, "100.0", 7, 3_600_000, "0.01", "4.0", "50.0"]
