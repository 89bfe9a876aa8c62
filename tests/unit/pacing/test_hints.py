"""What a target's answer says about its limits: parsing, precedence, garbage."""

from prometheus_client import REGISTRY

from ezthrottle_server.pacing.hints import read_hints

NOW = 1_800_000_000_000


def hints(status=200, retry_after_s=None, **headers):
    h = {k.replace("_", "-").lower(): v for k, v in headers.items()}
    return read_hints(status, h, now_ms=NOW, retry_after_s=retry_after_s, min_rps=0.01, max_pause_s=3600)


def invalid(header):
    return REGISTRY.get_sample_value("ezt_pacing_header_invalid_total", {"header": header}) or 0.0


def test_ezthrottle_headers():
    h = hints(x_ezthrottle_rps="0.5", x_ezthrottle_max_concurrent="10")
    assert (h.rps, h.max_concurrent, h.pause_until_ms) == (0.5, 10, None)


def test_aqueduct_wins_when_both_are_present():
    h = hints(x_ezthrottle_rps="5", x_aqueduct_rps="7.5", x_ezthrottle_max_concurrent="3", x_aqueduct_max_concurrent="4")
    assert (h.rps, h.max_concurrent) == (7.5, 4)


def test_garbage_is_ignored_and_counted():
    before = {n: invalid(n) for n in ("x-ezthrottle-rps", "x-aqueduct-rps", "x-ezthrottle-max-concurrent")}
    for bad in ("fast", "", "-1", "0", "nan", "inf", "1e400"):
        assert hints(x_ezthrottle_rps=bad).rps is None
    for bad in ("2.5", "0", "-3", "ten", "99999999999"):
        assert hints(x_ezthrottle_max_concurrent=bad).max_concurrent is None
    assert invalid("x-ezthrottle-rps") - before["x-ezthrottle-rps"] == 7
    assert invalid("x-ezthrottle-max-concurrent") - before["x-ezthrottle-max-concurrent"] == 5
    # an invalid Aqueduct value does not hide a valid EZThrottle one
    assert hints(x_aqueduct_rps="lots", x_ezthrottle_rps="3").rps == 3
    assert invalid("x-aqueduct-rps") - before["x-aqueduct-rps"] == 1


def test_tiny_rates_are_raised_to_the_floor():
    assert hints(x_ezthrottle_rps="0.000001").rps == 0.01


def test_retry_after_pauses_only_on_429_and_503():
    assert hints(429, retry_after_s=2.5).pause_until_ms == NOW + 2500
    assert hints(503, retry_after_s=1).pause_until_ms == NOW + 1000
    assert hints(500, retry_after_s=2).pause_until_ms is None
    assert hints(200, retry_after_s=2).pause_until_ms is None
    assert hints(429, retry_after_s=0).pause_until_ms is None
    assert hints(429, retry_after_s=10**9).pause_until_ms == NOW + 3600 * 1000  # capped


def test_no_answer_no_hints():
    assert read_hints(None, {"x-ezthrottle-rps": "5"}, now_ms=NOW, retry_after_s=None, min_rps=0.01, max_pause_s=1).empty


def test_digits_that_are_not_ascii_are_garbage_not_a_crash():
    # '²'.isdigit() is true but int('²') raises: a target's header must never crash the attempt.
    before = invalid("x-ezthrottle-max-concurrent")
    assert hints(x_ezthrottle_max_concurrent="²").max_concurrent is None
    assert hints(x_ezthrottle_max_concurrent="١٢").max_concurrent is None
    assert invalid("x-ezthrottle-max-concurrent") == before + 2
