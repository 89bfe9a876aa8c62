"""``list_jobs`` and ``get_domain`` on the wire: the query each page sends, and the pages followed to the end."""

from __future__ import annotations

import urllib.parse
from typing import Any

import pytest

from ezthrottle import AsyncEZThrottle, EZThrottle, ValidationError
from unit.sdk.conftest import Scripted

pytestmark = pytest.mark.timeout(30)


def page(ids: list[str], cursor: str | None) -> Scripted:
    return Scripted(200, {"jobs": [{"job_id": i, "status": "success"} for i in ids], "next_cursor": cursor})


def queries(api: Any) -> list[list[tuple[str, str]]]:
    return [urllib.parse.parse_qsl(urllib.parse.urlsplit(r.path).query) for r in api.api_requests("/api/v1/jobs")]


def test_the_generator_follows_every_cursor_with_the_same_filters(client: EZThrottle, api: Any) -> None:
    api.script(page(["j3", "j2"], "c1"), page([], "c2"), page(["j1"], None))
    jobs = client.list_jobs(
        status=["failed", "cancelled"], domain="api.stripe.com", metadata={"order": "A-1", "n": 3, "vip": True}, limit=2
    )
    assert api.api_requests() == []  # lazy: nothing is asked before the first job is wanted
    assert [j["job_id"] for j in jobs] == ["j3", "j2", "j1"]  # an empty page with a cursor is followed too
    filters = [
        ("status", "failed,cancelled"), ("domain", "api.stripe.com"),
        ("metadata.order", "A-1"), ("metadata.n", "3"), ("metadata.vip", "true"), ("limit", "2"),
    ]  # fmt: skip
    assert queries(api) == [filters, [*filters, ("cursor", "c1")], [*filters, ("cursor", "c2")]]
    assert all(r.method == "GET" and r.headers["authorization"] == f"Bearer {api.api_key}" for r in api.api_requests())


@pytest.mark.asyncio
async def test_the_async_client_iterates_the_same_pages(async_client: AsyncEZThrottle, api: Any) -> None:
    api.script(page(["j2"], "c1"), page(["j1"], None))
    got = [j["job_id"] async for j in async_client.list_jobs(root_job_id="job_1", created_after=5, created_before=9)]
    assert got == ["j2", "j1"]
    assert queries(api)[1] == [("root_job_id", "job_1"), ("created_after", "5"), ("created_before", "9"), ("limit", "50"), ("cursor", "c1")]


@pytest.mark.parametrize(
    "filters",
    [
        {"limit": 0},
        {"limit": 201},
        {"status": ""},
        {"status": [1]},
        {"created_after": -1},
        {"created_before": "now"},
        {"metadata": {"a": {"b": 1}}},
    ],
)
def test_bad_filters_raise_before_any_request(client: EZThrottle, api: Any, filters: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        client.list_jobs(**filters)
    assert api.api_requests() == []


def test_get_domain_asks_for_the_host(client: EZThrottle, api: Any) -> None:
    api.script(Scripted(200, {"domain": "api.stripe.com:443", "jobs": {"queued": 1, "in_flight": 0, "complete": True}}))
    assert client.get_domain("api.stripe.com:443")["jobs"]["queued"] == 1
    assert [r.path for r in api.api_requests()] == ["/api/v1/domains/api.stripe.com:443"]
    with pytest.raises(ValidationError):
        client.get_domain("")
