import email.utils
import time

import pytest

from ezthrottle_server.common.jobs import DEFAULT_RETRY_POLICY
from ezthrottle_server.edge.executor import BLOCKED, CONNECTION, TIMEOUT, AttemptResult
from ezthrottle_server.edge.retry import FAILED, REROUTE, RETRY, SUCCESS, backoff_s, decide, retry_after_s

POLICY = {**DEFAULT_RETRY_POLICY}


def d(outcome, retries=0, reroutes=0, policy=POLICY):
    return decide(outcome, policy, retries, reroutes, base_s=0.5, cap_s=30)


@pytest.mark.parametrize(
    ("outcome", "retries", "reroutes", "action", "reason"),
    [
        (AttemptResult(status_code=200), 0, 0, SUCCESS, ""),
        (AttemptResult(status_code=204), 0, 0, SUCCESS, ""),
        (AttemptResult(status_code=429), 0, 0, RETRY, "status_429"),
        (AttemptResult(status_code=503), 2, 0, RETRY, "status_503"),
        (AttemptResult(status_code=503), 3, 0, FAILED, "retries_exhausted"),
        (AttemptResult(status_code=500), 0, 0, REROUTE, "status_500"),
        (AttemptResult(status_code=502), 0, 2, FAILED, "reroutes_exhausted"),
        (AttemptResult(status_code=404), 0, 0, FAILED, "non_retryable_status"),
        (AttemptResult(error_kind=TIMEOUT), 0, 0, RETRY, "timeout"),
        (AttemptResult(error_kind=TIMEOUT), 3, 0, FAILED, "timeout"),
        (AttemptResult(error_kind=CONNECTION), 0, 0, REROUTE, "connection_error"),
        (AttemptResult(error_kind=CONNECTION), 0, 2, FAILED, "reroutes_exhausted"),
        (AttemptResult(error_kind=BLOCKED), 0, 0, FAILED, "outbound_blocked"),
    ],
)
def test_decisions(outcome, retries, reroutes, action, reason):
    got = d(outcome, retries, reroutes)
    assert (got.action, got.reason) == (action, reason)


def test_custom_codes_are_honoured():
    policy = {**POLICY, "retry_codes": [418], "reroute_codes": []}
    assert d(AttemptResult(status_code=418), policy=policy).action == RETRY
    assert d(AttemptResult(status_code=500), policy=policy).action == FAILED


def test_retry_after_sets_a_floor_on_the_wait():
    got = d(AttemptResult(status_code=429, headers={"retry-after": "7"}))
    assert got.delay_s >= 7


def test_retry_after_parses_seconds_and_http_dates():
    assert retry_after_s("3") == 3.0
    assert retry_after_s("garbage") is None
    assert retry_after_s(None) is None
    now = time.time()
    date = email.utils.formatdate(now + 10, usegmt=True)
    assert 8 <= retry_after_s(date, now=now) <= 11


def test_backoff_is_full_jitter_within_the_cap():
    samples = [backoff_s(10, 0.5, 30) for _ in range(200)]
    assert all(0 <= s <= 30 for s in samples)
    assert max(samples) > 5  # spread, not a constant
    assert all(0 <= backoff_s(0, 0.5, 30) <= 0.5 for _ in range(50))


def test_a_retry_after_that_is_not_finite_is_ignored():
    # 'inf' once made the retry's due time int(inf): the attempt crashed and was sent again and again.
    assert retry_after_s("inf") is None and retry_after_s("1e400") is None and retry_after_s("nan") is None
    decision = d(AttemptResult(status_code=429, headers={"retry-after": "inf"}))
    assert decision.action == RETRY and decision.delay_s <= 0.5
