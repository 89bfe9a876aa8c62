"""The retry decision of a webhook POST, and its documented default schedule."""

import random

import pytest

from ezthrottle_server.common.deliveries import route_for
from ezthrottle_server.common.webhook_schedule import Decision, backoff_s, decide

DEFAULTS = {"base_s": 10.0, "cap_s": 3600.0, "window_s": 24 * 3600.0}


def after(status, *, failures=1, since_ms=0, now_ms=0, blocked=False, **settings):
    return decide(
        status, blocked=blocked, failures=failures, since_ms=since_ms, now_ms=now_ms, rng=random.Random(1), **{**DEFAULTS, **settings}
    )


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_2xx_is_delivered(status):
    assert after(status) == Decision("delivered")


def test_410_is_dead_at_once_and_a_blocked_url_too():
    assert after(410) == Decision("dead", reason="gone")
    assert after(None, blocked=True) == Decision("dead", reason="outbound_blocked")


@pytest.mark.parametrize("status", [None, 301, 400, 404, 429, 500, 503])
def test_everything_else_retries(status):
    d = after(status)
    assert d.action == "retry" and 5.0 <= d.delay_s <= 10.0


def test_backoff_doubles_with_equal_jitter_up_to_the_cap():
    rng = random.Random(7)
    for n in range(1, 20):
        ceiling = min(3600.0, 10.0 * 2 ** (n - 1))
        for _ in range(50):
            assert ceiling / 2 <= backoff_s(n, 10.0, 3600.0, rng) <= ceiling


def test_dead_when_the_next_post_would_fall_after_the_window():
    window_ms = 24 * 3600 * 1000
    assert after(503, failures=5, now_ms=window_ms - 1000).action == "dead"
    assert after(503, failures=5, now_ms=window_ms - 1000).reason == "window_exhausted"
    assert after(503, failures=1, now_ms=window_ms - 60_000).action == "retry"
    assert after(503, failures=1, since_ms=10**9, now_ms=10**9 + window_ms - 60_000).action == "retry"


def test_default_schedule_spans_the_day_in_30_to_55_posts():
    for seed in range(20):
        rng = random.Random(seed)
        now_ms, failures = 0, 0
        while True:
            failures += 1
            d = decide(503, blocked=False, failures=failures, since_ms=0, now_ms=now_ms, rng=rng, **DEFAULTS)
            if d.action == "dead":
                break
            now_ms += int(d.delay_s * 1000)
        assert 30 <= failures <= 55
        assert now_ms > 22 * 3600 * 1000  # retried for (almost) the whole window


def test_routes_rotate_over_live_regions_else_any():
    assert route_for([], 0, {"iad"}) == "any"
    assert route_for(["lax"], 0, {"iad"}) == "any"
    assert route_for(["iad", "lax"], 0, {"iad", "lax"}) == "iad"
    assert route_for(["iad", "lax"], 1, {"iad", "lax"}) == "lax"
    assert route_for(["iad", "lax"], 1, {"lax"}) == "lax"
