"""Fixtures for the SDK against real edges: the published 1.3.0 SDK in its virtualenv."""

from __future__ import annotations

import pytest

from support.published import PublishedSDK, published_sdk
from support.services import REPO


@pytest.fixture(scope="session")
def published() -> PublishedSDK:
    """``ezthrottle==1.3.0`` in ``.cache/`` (installed once); skip without network."""
    return published_sdk(REPO / "tests" / "unit" / "sdk" / "published_sdk.py")
