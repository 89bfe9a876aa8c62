"""The SDK's second-round names: ``Step.start_before(ms)`` and ``cancel_job`` / ``cancel_jobs``, built without I/O.

(They run against a real edge in tests/integration/edge/test_cancel.py and test_deadlines.py.)
"""

from __future__ import annotations

import pytest

from ezthrottle import AsyncEZThrottle, EZThrottle, Step, ValidationError
from ezthrottle._waiting import FINAL_STATUSES
from ezthrottle.client import BaseClient

URL = "https://api.example.com/v1/charges"
LATER = 1_900_000_000_000


def test_start_before_goes_in_the_payload_and_back() -> None:
    payload = Step().url(URL).start_before(LATER)._build_job_payload()
    assert payload["start_before_ms"] == LATER
    assert "start_before_ms" not in Step().url(URL)._build_job_payload()  # unset: the published SDK's payload
    chained = Step().url(URL).on_failure(Step().url(URL + "/b").start_before(LATER))._build_job_payload()
    assert chained["on_failure"]["start_before_ms"] == LATER
    assert Step.from_payload(payload)._build_job_payload() == payload


@pytest.mark.parametrize("bad", ["soon", 1.5, True, -1, 1_700_000_000])  # the last: seconds, not ms
def test_start_before_refuses_what_is_not_epoch_ms(bad: object) -> None:
    with pytest.raises(ValidationError, match="start_before_ms"):
        Step().url(URL).start_before(bad)  # type: ignore[arg-type]


def test_start_before_must_follow_retry_at() -> None:
    with pytest.raises(ValidationError, match="after retry_at"):
        Step().url(URL).retry_at(LATER).start_before(LATER)._build_job_payload()


def test_cancel_calls() -> None:
    call = BaseClient._cancel_call("job_1_abc p0", False)
    assert (call.method, call.path, call.json) == ("DELETE", "/api/v1/jobs/job_1_abc%20p0", None)
    assert BaseClient._cancel_call("j", True).path == "/api/v1/jobs/j?after_attempt=true"
    many = BaseClient._cancel_many_call(["a", "b"], False)
    assert (many.method, many.path, many.json) == ("POST", "/api/v1/jobs/cancel", {"job_ids": ["a", "b"], "after_attempt": False})
    for bad in ("", None):
        with pytest.raises(ValidationError):
            BaseClient._cancel_call(bad, False)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        BaseClient._cancel_call("j", "yes")  # type: ignore[arg-type]
    for ids in ([], "abc", ["a"] * 1001, ["a", ""]):
        with pytest.raises(ValidationError):
            BaseClient._cancel_many_call(ids, False)  # type: ignore[arg-type]


def test_cancel_matching_calls() -> None:
    query = BaseClient._list_query("scheduled", "api.example.com", None, 5, {"batch": "b1", "n": 3}, None, 50)
    call = BaseClient._cancel_matching_call(query, True)
    assert (call.method, call.path) == ("POST", "/api/v1/jobs/cancel")
    assert call.json == {
        "filter": {"status": "scheduled", "domain": "api.example.com", "created_before": "5", "metadata.batch": "b1", "metadata.n": "3"},
        "after_attempt": True,
    }
    progress = BaseClient._cancel_progress_call("cnl_0a")
    assert (progress.method, progress.path) == ("GET", "/api/v1/jobs/cancel/cnl_0a")
    with pytest.raises(ValidationError):
        BaseClient._cancel_matching_call(query, "yes")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        BaseClient._cancel_progress_call("")


def test_both_clients_have_cancel_and_wait_knows_the_new_final_statuses() -> None:
    for cls in (EZThrottle, AsyncEZThrottle):
        assert callable(cls.cancel_job) and callable(cls.cancel_jobs)
        assert callable(cls.cancel_matching) and callable(cls.get_cancel_progress) and callable(cls.wait_cancel)
    assert {"success", "failed", "cancelled", "expired"} == FINAL_STATUSES
