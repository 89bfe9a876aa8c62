"""Fixtures of the pacing integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from support.services import RunningApp, StartApp
from support.targets import Target, serving


@pytest_asyncio.fixture
async def other_target() -> AsyncIterator[Target]:
    """A second loopback target: another domain (same host, another port)."""
    async with serving(Target()) as server:
        yield server


@pytest_asyncio.fixture
async def domains_coordinator(start_coordinator: StartApp, tmp_path: Path) -> tuple[RunningApp, Path]:
    """A coordinator whose domains.yaml is a file of the test's: (app, path).

    Write the file before asking for the fixture's work; the coordinator
    applies it within its poll (1 s) or at once on SIGHUP.
    """
    path = tmp_path / "domains.yaml"
    path.write_text("domains: {}\n")
    app = await start_coordinator(node_id="coordinator-pacing", domains_file=str(path))
    return app, path
