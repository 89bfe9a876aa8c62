"""Fixtures of the pacing integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from support.services import RunningApp, make_settings
from support.targets import Target


@pytest_asyncio.fixture
async def other_target() -> AsyncIterator[Target]:
    """A second loopback target: another domain (same host, another port)."""
    server = await Target().start()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture
async def domains_coordinator(redis, redis_url, tmp_path) -> AsyncIterator[tuple[RunningApp, Path]]:
    """A coordinator whose domains.yaml is a file of the test's: (app, path).

    Write the file before asking for the fixture's work; the coordinator
    applies it within its poll (1 s) or at once on SIGHUP.
    """
    from ezthrottle_server.coordinator.app import create_app

    path = tmp_path / "domains.yaml"
    path.write_text("domains: {}\n")
    settings = make_settings("coordinator", redis_url, node_id="coordinator-pacing", domains_file=str(path))
    app = await RunningApp(create_app(settings), settings).start()
    try:
        yield app, path
    finally:
        await app.stop()

