"""Issue 14, normalization: one name, one pacing limit.

``api.payments.example.`` (fully qualified, a trailing dot) got its own limit and
skipped ``domains.yaml``. The pacing scope now ignores a trailing dot and
case, and treats a default port as the port left out, so every spelling of a
domain shares the operator's limit.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from ezthrottle_server.common.urls import domain_of
from ezthrottle_server.pacing.overrides import apply_overrides, parse_overrides
from ezthrottle_server.pacing.scope import parse_domain
from support.jobs import auth

pytestmark = pytest.mark.asyncio

SPELLINGS = [
    "api.payments.example",
    "api.payments.example.",
    "API.Payments.example:443",
    "https://api.payments.example",
    "https://API.PAYMENTS.EXAMPLE.:443/v1/x",
]


async def test_every_spelling_of_a_domain_is_one_scope_with_the_operators_limit(http, redis, edge, api_key):
    assert {parse_domain(s) for s in SPELLINGS} == {"api.payments.example:443"}
    fully_qualified, shouted = (
        domain_of("https://api.payments.example./v1/charges"),
        domain_of("https://API.Payments.example:443/v1/charges"),
    )
    assert fully_qualified == shouted == "api.payments.example:443"
    await apply_overrides(redis, parse_overrides("domains:\n  api.payments.example: {rps: 7, max_concurrent: 3}\n"))
    for spelling in SPELLINGS:
        async with http.get(f"{edge.url}/api/v1/domains/{quote(spelling, safe='')}", headers=auth(api_key)) as resp:
            body = await resp.json()
        assert resp.status == 200 and body["domain"] == "api.payments.example:443", (spelling, body)
        assert body["limit"]["rps"] == 7 and body["limit"]["max_concurrent"] == 3, (spelling, body)
