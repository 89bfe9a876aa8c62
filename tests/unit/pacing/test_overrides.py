"""domains.yaml: validation, and applying it to Redis exactly."""

import pytest

from ezthrottle_server.common import keys
from ezthrottle_server.pacing import OverridesError
from ezthrottle_server.pacing.overrides import apply_overrides, configured, load_overrides, parse_overrides


def test_fields_are_checked_and_normalised():
    o = parse_overrides(
        "domains:\n"
        "  API.Payments.test: {rps: 25, max_concurrent: 8, burst: 2, max_rps: 50, per_customer: false}\n"
        "  127.0.0.1:8080: {per_customer: true}\n"
        "  quiet.example:443:\n"
    )
    assert o.domains == {
        "api.payments.test:443": {"rps": 25.0, "max_concurrent": 8, "burst": 2, "max_rps": 50.0, "per_customer": False},
        "127.0.0.1:8080": {"per_customer": True},
    }
    assert (
        o.digest
        == parse_overrides(
            "domains:\n  127.0.0.1:8080: {per_customer: true}\n  api.payments.test:443: "
            "{burst: 2, max_concurrent: 8, max_rps: 50, per_customer: false, rps: 25}\n"
        ).digest
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("domains:\n  a.example: {rps: 0}\n", "above 0"),
        ("domains:\n  a.example: {rps: fast}\n", "above 0"),
        ("domains:\n  a.example: {max_concurrent: 1.5}\n", "integer"),
        ("domains:\n  a.example: {per_customer: 1}\n", "true or false"),
        ("domains:\n  a.example: {rsp: 5}\n", "unknown field"),
        ("domains:\n  a.example: {rps: 60, max_rps: 50}\n", "above its max_rps"),
        ("domains:\n  a.example: 5\n", "mapping"),
        ("domains:\n  a.example: {}\n  A.example:443: {rps: 1}\n", "twice"),
        ("domain:\n  a.example: {rps: 1}\n", "unknown top-level"),
        ("domains: [a]\n", "mapping"),
        ("domains: {a: [\n", "not valid YAML"),
        ("domains:\n  a.example: {scope: api_key}\n", "one of domain, credential"),
        ("domains:\n  a.example: {scope: credential, per_customer: true}\n", "exclude each other"),
    ],
)
def test_bad_files_are_refused_with_a_reason(text, message):
    with pytest.raises(OverridesError, match=message):
        parse_overrides(text)


def test_a_missing_file_means_no_overrides(tmp_path):
    assert load_overrides(tmp_path / "nope.yaml").domains == {}


@pytest.mark.asyncio
async def test_apply_writes_exactly_the_file(redis):
    first = parse_overrides("domains:\n  a.example: {rps: 5}\n  b.example: {max_concurrent: 3}\n")
    assert await apply_overrides(redis, first) is True
    assert await apply_overrides(redis, first) is False  # unchanged: nothing written
    assert await configured(redis) == {"a.example:443": {"rps": "5.0"}, "b.example:443": {"max_concurrent": "3"}}
    second = parse_overrides("domains:\n  b.example: {rps: 1.5}\n")
    assert await apply_overrides(redis, second) is True
    assert await configured(redis) == {"b.example:443": {"rps": "1.5"}}  # max_concurrent gone too
    assert not await redis.exists(keys.pacing_conf("a.example:443"))
    await apply_overrides(redis, parse_overrides(""))
    assert await configured(redis) == {}


def test_scope_credential_is_kept():
    assert parse_overrides("domains:\n  a.example: {scope: credential}\n").domains == {"a.example:443": {"scope": "credential"}}
