import pytest

from ezthrottle_server.common.errors import ApiError
from ezthrottle_server.common.jobs import DEFAULT_RETRY_POLICY, hash_key, validate_job

REGIONS = ("iad", "lax", "ord")


def check(payload):
    return validate_job(payload, REGIONS)


def test_minimal_job_gets_defaults():
    job = check({"url": "https://api.example.test/x"})
    assert job["method"] == "GET"
    assert job["headers"] == {} and job["body"] is None and job["metadata"] == {}
    assert job["webhooks"] == [] and job["webhook_quorum"] == 1
    assert job["region_policy"] == "fallback" and job["execution_mode"] == "race"
    assert job["retry_policy"] == DEFAULT_RETRY_POLICY
    assert job["idempotent_key"] is None and job["retry_at"] is None


def test_full_payload_as_the_published_sdk_sends_it():
    job = check(
        {
            "url": "https://api.stripe.test/charges",
            "method": "post",
            "headers": {"Authorization": "Bearer x"},
            "body": '{"amount": 1000}',
            "metadata": {"order": "1"},
            "webhooks": [{"url": "https://app.test/hook"}, {"url": "https://b.test/h", "has_quorum_vote": False, "regions": ["iad"]}],
            "webhook_quorum": 1,
            "regions": ["iad", "lax"],
            "region_policy": "strict",
            "execution_mode": "fanout",
            "retry_policy": {"max_retries": 5, "reroute_codes": [500]},
            "fallback_job": {
                "url": "https://backup.test",
                "trigger": {"type": "on_error", "codes": [500]},
                "fallback_job": {"url": "https://b2.test", "trigger": {"type": "on_timeout", "timeout_ms": 100}},
            },
            "on_success": {"url": "https://next.test", "type": "frugal"},
            "on_failure": {"url": "https://alert.test"},
            "on_failure_timeout_ms": 5000,
            "idempotent_key": "order-1",
            "retry_at": 1_800_000_000_000,
        }
    )
    assert job["method"] == "POST"
    assert job["webhooks"][0]["has_quorum_vote"] is True
    assert job["webhooks"][1] == {"url": "https://b.test/h", "has_quorum_vote": False, "regions": ["iad"]}
    assert job["retry_policy"]["max_retries"] == 5 and job["retry_policy"]["retry_codes"] == [429, 503]
    assert job["fallback_job"]["trigger"] == {"type": "on_error", "codes": [500]}
    assert job["fallback_job"]["fallback_job"]["trigger"] == {"type": "on_timeout", "timeout_ms": 100}
    assert job["on_success"]["type"] == "frugal"


def test_fallback_without_trigger_is_accepted_as_the_published_sdk_sends_it():
    job = check({"url": "https://a.test", "fallback_job": {"url": "https://b.test", "trigger": {}}})
    assert job["fallback_job"]["trigger"] == {}


@pytest.mark.parametrize(
    ("payload", "code", "field"),
    [
        ({}, "missing_field", "url"),
        ({"url": 5}, "invalid_field", "url"),
        ({"url": "ftp://x.test"}, "invalid_field", "url"),
        ({"url": "http://"}, "invalid_field", "url"),
        ({"url": "https://a.test", "method": "BREW"}, "invalid_field", "method"),
        ({"url": "https://a.test", "bogus": 1}, "unknown_field", "bogus"),
        ({"url": "https://a.test", "headers": {"Host": "evil"}}, "invalid_field", "headers.Host"),
        ({"url": "https://a.test", "headers": {"X": "a\r\nb"}}, "invalid_field", "headers.X"),
        ({"url": "https://a.test", "headers": {"X": 1}}, "invalid_field", "headers.X"),
        ({"url": "https://a.test", "body": {"a": 1}}, "invalid_field", "body"),
        ({"url": "https://a.test", "metadata": []}, "invalid_field", "metadata"),
        ({"url": "https://a.test", "regions": ["mars"]}, "invalid_field", "regions"),
        ({"url": "https://a.test", "regions": []}, "invalid_field", "regions"),
        ({"url": "https://a.test", "region_policy": "loose"}, "invalid_field", "region_policy"),
        ({"url": "https://a.test", "execution_mode": "yolo"}, "invalid_field", "execution_mode"),
        ({"url": "https://a.test", "retry_policy": {"max_retries": -1}}, "invalid_field", "retry_policy.max_retries"),
        ({"url": "https://a.test", "retry_policy": {"retry_codes": [99]}}, "invalid_field", "retry_policy.retry_codes"),
        ({"url": "https://a.test", "retry_policy": {"tries": 1}}, "unknown_field", "retry_policy.tries"),
        ({"url": "https://a.test", "webhooks": [{"url": "https://h.test", "secret": "x"}]}, "unknown_field", "webhooks[0].secret"),
        ({"url": "https://a.test", "webhooks": [{}]}, "missing_field", "webhooks[0].url"),
        ({"url": "https://a.test", "webhooks": [{"url": "https://h.test"}], "webhook_quorum": 2}, "invalid_field", "webhook_quorum"),
        ({"url": "https://a.test", "webhook_quorum": 0}, "invalid_field", "webhook_quorum"),
        ({"url": "https://a.test", "webhook_quorum": True}, "invalid_field", "webhook_quorum"),
        ({"url": "https://a.test", "retry_at": "soon"}, "invalid_field", "retry_at"),
        ({"url": "https://a.test", "idempotent_key": ""}, "invalid_field", "idempotent_key"),
        ({"url": "https://a.test", "idempotent_key": "k" * 300}, "invalid_field", "idempotent_key"),
        ({"url": "https://a.test", "on_success": {"method": "GET"}}, "missing_field", "on_success.url"),
        (
            {"url": "https://a.test", "fallback_job": {"url": "https://b.test", "trigger": {"type": "later"}}},
            "invalid_field",
            "fallback_job.trigger.type",
        ),
        ({"url": "https://a.test", "on_success": {"url": "https://b.test", "trigger": {}}}, "unknown_field", "on_success.trigger"),
        ({"url": "https://a.test", "type": "cheap"}, "invalid_field", "type"),
    ],
)
def test_bad_input_names_the_field(payload, code, field):
    with pytest.raises(ApiError) as exc:
        check(payload)
    assert exc.value.code == code
    assert exc.value.field == field
    assert exc.value.status == 400
    assert field in exc.value.message


def test_non_object_body_is_rejected():
    with pytest.raises(ApiError) as exc:
        check([1, 2])
    assert exc.value.status == 400


def test_chains_are_bounded():
    payload: dict = {"url": "https://a.test"}
    node = payload
    for _ in range(20):
        node["on_success"] = {"url": "https://a.test"}
        node = node["on_success"]
    with pytest.raises(ApiError) as exc:
        check(payload)
    assert "levels" in exc.value.message


def test_hash_key_depends_on_customer_method_url_body():
    base = check({"url": "https://a.test", "method": "POST", "body": "x"})
    assert hash_key("acme", base) == hash_key("acme", check({"url": "https://a.test", "method": "post", "body": "x"}))
    assert hash_key("acme", base) != hash_key("globex", base)
    assert hash_key("acme", base) != hash_key("acme", check({"url": "https://a.test", "method": "POST", "body": "y"}))
    assert hash_key("acme", base) != hash_key("acme", check({"url": "https://b.test", "method": "POST", "body": "x"}))


@pytest.mark.parametrize("levels", [1, 15, 16, 17, 40])
def test_metadata_nested_up_to_sixteen_levels_is_accepted_and_deeper_refused(levels):
    from ezthrottle_server.common.jobs import MAX_METADATA_DEPTH

    inner: object = [1, "x", None]  # one level: an array of scalars
    for i in range(levels - 2):
        inner = [inner, 3] if i % 2 else {"k": inner, "s": "v"}
    metadata = {"top": inner, "n": 2} if levels >= 2 else {"leaf": 1}  # an object, as metadata must be
    payload = {"url": "http://127.0.0.1:9/x", "metadata": metadata}
    if levels <= MAX_METADATA_DEPTH:
        assert check(payload)["metadata"] == metadata
    else:
        with pytest.raises(ApiError) as err:
            check(payload)
        assert "levels deep" in err.value.message
