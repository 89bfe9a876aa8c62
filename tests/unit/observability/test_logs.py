"""JSON logs: every line about a job says which job, region, node and domain, and none carries a secret.

Jobs run through a real in-process edge and delivery worker; the root
logger's lines are captured through the services' own formatter and parsed.
The target echoes the request back (headers and body end up in the job's
result), so a line that logged a result, a spec or a request would leak.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from ezthrottle_server.common.logs import JsonFormatter
from support.jobs import auth, submit, wait_final

SECRET_HEADER = "hdr-secret-5b1e9c0f7a"
SECRET_BODY = "body-secret-card-4242-4242"
WEBHOOK_SECRET = "whsec-obs-test-9f8e7d6c5b4a"


@pytest.fixture
def json_lines(caplog: pytest.LogCaptureFixture) -> Iterator[io.StringIO]:
    """Everything logged (DEBUG too: no level may leak), as the services write it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test", "node-obs-1"))
    root = logging.getLogger()
    root.addHandler(handler)
    caplog.set_level(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)


def parse(stream: io.StringIO) -> list[dict[str, Any]]:
    text = stream.getvalue()
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.asyncio
async def test_job_lines_carry_job_region_node_domain_and_no_secrets(
    http, start_edge, delivery, api_key, target, receiver, json_lines: io.StringIO
) -> None:
    edge = await start_edge("iad")
    async with http.post(f"{edge.url}/api/v1/webhook-secrets", json={"primary_secret": WEBHOOK_SECRET}, headers=auth(api_key)) as r:
        assert r.status == 200
    jobs = {
        "ok": await submit(
            http,
            edge.url,
            api_key,
            {
                "url": f"{target.url}/echo",
                "method": "POST",
                "idempotent_key": "ok",
                "headers": {"X-Api-Secret": SECRET_HEADER, "Authorization": f"Bearer {SECRET_HEADER}"},
                "body": f'{{"card": "{SECRET_BODY}"}}',
                "webhooks": [{"url": f"{receiver.url}/hook"}],
            },
        ),
        "failed": await submit(
            http,
            edge.url,
            api_key,
            {
                "url": f"{target.url}/status/400",
                "method": "POST",
                "idempotent_key": "failed",
                "body": SECRET_BODY,
            },
        ),
        "rerouted": await submit(
            http,
            edge.url,
            api_key,
            {
                "url": f"{target.url}/status/502",
                "idempotent_key": "rerouted",
                "headers": {"X-Api-Secret": SECRET_HEADER},
            },
        ),
    }
    assert (await wait_final(http, edge.url, api_key, jobs["ok"]["job_id"]))["status"] == "success"
    assert (await wait_final(http, edge.url, api_key, jobs["failed"]["job_id"]))["status"] == "failed"
    await target.wait_for(1, "/status/502")
    [hook] = await receiver.wait_for(1, "/hook")
    assert SECRET_BODY in hook.body.decode() and SECRET_HEADER in hook.body.decode()  # the echo really carried them
    async with http.get(f"{edge.url}/api/v1/jobs/job_1700000000000_0123456789abcdefp0", headers=auth("ezt_live_wrong-key")) as r:
        assert r.status == 401
    await _settle(json_lines, jobs["ok"]["job_id"], "webhook 0: delivered")
    await _settle(json_lines, jobs["rerouted"]["job_id"], "reroute")

    text = json_lines.getvalue()
    lines = parse(json_lines)  # every line is one JSON object
    for secret in (SECRET_HEADER, SECRET_BODY, WEBHOOK_SECRET, api_key, api_key.removeprefix("ezt_live_"), "ezt_live_wrong-key"):
        assert secret not in text, f"a log line carries {secret!r}"

    target_domain = f"127.0.0.1:{target.port}"
    about_jobs = [line for line in lines if line.get("job_id") in {j["job_id"] for j in jobs.values()}]
    for line in about_jobs:
        missing = {"job_id", "region", "node", "domain"} - set(line)
        assert not missing, (missing, line)
        assert line["node"] == "node-obs-1"
        assert line["region"] in ("iad", "any")
    edge_lines = [line for line in about_jobs if line["logger"].startswith("ezthrottle_server.edge")]
    assert edge_lines and {line["domain"] for line in edge_lines} == {target_domain}
    messages = [line["msg"] for line in about_jobs]
    for expected in ("job accepted", "finished", "reroute", "delivering to 1 webhook(s)", "webhook 0: delivered"):
        assert any(expected in m for m in messages), (expected, messages)
    # One INFO line per job on the edge (its outcome) and one per webhook POST; acceptance and the plan are DEBUG.
    assert {line["level"] for line in about_jobs if line["msg"] == "job accepted"} == {"debug"}
    assert {line["level"] for line in about_jobs if line["msg"].startswith("delivering to")} == {"debug"}
    assert any(line["level"] == "info" and "finished" in line["msg"] for line in about_jobs)
    sends = [line for line in about_jobs if line["msg"].startswith("webhook 0")]
    assert {line["domain"] for line in sends} == {f"127.0.0.1:{receiver.port}"}  # where the POST went


async def _settle(stream: io.StringIO, job_id: str, msg: str) -> None:
    import asyncio

    async with asyncio.timeout(10):
        while not any(line.get("job_id") == job_id and msg in line["msg"] for line in parse(stream)):
            await asyncio.sleep(0.02)


def test_key_shaped_strings_are_masked_even_when_code_logs_them() -> None:
    formatter = JsonFormatter("edge", "edge-iad-1")
    leaky = logging.LogRecord(
        "x", logging.WARNING, __file__, 1, "got %s and %s", ("ezt_live_AbCdEf0123456789xyz", "Bearer tok-123456789"), None
    )
    line = orjson.loads(formatter.format(leaky))
    assert "AbCdEf0123456789xyz" not in line["msg"] and "tok-123456789" not in line["msg"]
    assert line["msg"] == "got ezt_live_[redacted] and Bearer [redacted]"
    plain = logging.LogRecord("x", logging.INFO, __file__, 1, "job accepted", (), None)
    plain.job_id, plain.region, plain.domain = "job_1", "iad", "api.example:443"
    assert {k: v for k, v in orjson.loads(formatter.format(plain)).items() if k in ("job_id", "region", "node", "domain")} == {
        "job_id": "job_1",
        "region": "iad",
        "node": "edge-iad-1",
        "domain": "api.example:443",
    }


def test_lines_of_one_loop_turn_are_written_together_warnings_at_once() -> None:
    import asyncio

    from ezthrottle_server.common.logs import TurnBufferedHandler

    class Stream(io.StringIO):
        writes = 0

        def write(self, s: str) -> int:
            self.writes += 1
            return super().write(s)

    stream = Stream()
    handler = TurnBufferedHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("test.turns")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)

    async def main() -> None:
        log.info("one")
        log.info("two")
        assert stream.getvalue() == ""  # still this turn
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert stream.getvalue() == "one\ntwo\n" and stream.writes == 1
        log.info("three")
        log.warning("four")  # at once, after what was buffered before it
        assert stream.getvalue() == "one\ntwo\nthree\nfour\n"

    try:
        asyncio.run(main())
        log.info("five")  # no loop: at once
        assert stream.getvalue().endswith("five\n")
    finally:
        log.removeHandler(handler)
        log.propagate = True
