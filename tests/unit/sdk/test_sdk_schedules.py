"""The SDK's schedules: ``client.create_schedule`` and the rest, and ``Step.schedule``, built without I/O.

(They run against a real edge and coordinator in tests/integration/edge/test_schedules.py and examples/schedule_job.py.)
"""

from __future__ import annotations

import inspect

import pytest

from ezthrottle import AsyncEZThrottle, EZThrottle, Step, ValidationError
from ezthrottle.client import BaseClient

URL = "https://api.example.com/v1/report"


def test_schedule_calls() -> None:
    assert (BaseClient._schedule_call("GET").method, BaseClient._schedule_call("GET").path) == ("GET", "/api/v1/schedules")
    call = BaseClient._schedule_call("PATCH", "sch_a b", {"paused": True})
    assert (call.method, call.path, call.json) == ("PATCH", "/api/v1/schedules/sch_a%20b", {"paused": True})
    assert call.not_found and "sch_a b" in call.not_found
    with pytest.raises(ValidationError):
        BaseClient._schedule_call("GET", "")


def test_schedule_body_takes_a_step_or_a_payload_and_drops_the_idempotent_key() -> None:
    step = Step().url(URL).method("POST").idempotent_key("mine").metadata({"report": "daily"})
    body = BaseClient._schedule_body(step, cron="0 6 * * *", timezone="Europe/Paris", overlap="skip")
    assert body == {
        "job": {k: v for k, v in step._build_job_payload().items() if k != "idempotent_key"},
        "cron": "0 6 * * *",
        "timezone": "Europe/Paris",
        "overlap": "skip",
    }
    assert BaseClient._schedule_body({"url": URL}, every_s=60) == {"job": {"url": URL}, "every_s": 60}
    assert BaseClient._schedule_body(paused=False) == {"paused": False}


@pytest.mark.parametrize(
    "kwargs", [{"cron": "* * * * *", "every_s": 5}, {"every_s": 0}, {"every_s": True}, {"every_s": 5, "overlap": "queue"}]
)
def test_schedule_body_refuses_what_the_server_would(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        BaseClient._schedule_body({"url": URL}, **kwargs)  # type: ignore[arg-type]


def test_both_clients_and_the_step_have_schedules() -> None:
    names = ("create_schedule", "list_schedules", "get_schedule", "update_schedule", "pause_schedule", "resume_schedule", "delete_schedule")
    for name in names:
        assert callable(getattr(EZThrottle, name)) and inspect.iscoroutinefunction(getattr(AsyncEZThrottle, name))
    assert callable(Step.schedule) and inspect.iscoroutinefunction(Step.schedule_async)
    with pytest.raises(ValidationError, match="client"):
        Step().url(URL).schedule(every_s=60)
