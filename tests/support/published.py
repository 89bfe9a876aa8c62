"""The published ``ezthrottle==1.3.0`` in its own virtualenv, driven by a script of the tests.

Shared by the SDK's tests (payload parity, signatures, the published client
against a real edge: ``tests/unit/sdk/published_sdk.py``) and the delivery
tests (its verify functions on real deliveries:
``tests/integration/delivery/published_verify.py``). The virtualenv lives in
``.cache/`` and is installed once, under a lock that concurrent test sessions
share; without network the tests that need it skip. It is never a
dependency of the project.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support.services import REPO

PUBLISHED_VERSION = "1.3.0"


class PublishedSDK:
    """Runs ``script`` in the published package's virtualenv: JSON in on stdin, JSON out."""

    def __init__(self, python: Path, script: Path) -> None:
        self.python = python
        self.script = script

    def run(self, request: Any) -> Any:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        done = subprocess.run(
            [str(self.python), "-I", str(self.script)],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


def offline(reason: str) -> None:
    """Skip a test that needs the package index, except in CI (``CI`` set), where it must run."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI has the package index: this must not be skipped there)")
    pytest.skip(reason)


def published_sdk(script: Path) -> PublishedSDK:
    """Install ``ezthrottle==1.3.0`` into ``.cache/`` once (skip the test without network, except in CI)."""
    venv = REPO / ".cache" / f"ezthrottle-{PUBLISHED_VERSION}-venv"
    python = venv / "bin" / "python"
    ready = venv / ".installed"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test session may be installing it
        if not ready.exists():
            steps = [
                [sys.executable, "-m", "venv", "--clear", str(venv)],
                [str(python), "-m", "pip", "install", "-q", f"ezthrottle=={PUBLISHED_VERSION}"],
            ]
            for step in steps:
                try:
                    done = subprocess.run(step, capture_output=True, text=True, timeout=300)
                except (OSError, subprocess.TimeoutExpired) as exc:
                    offline(f"cannot set up ezthrottle=={PUBLISHED_VERSION} in {venv}: {exc}")
                if done.returncode != 0:
                    offline(f"cannot install ezthrottle=={PUBLISHED_VERSION} into {venv} (no network?): {done.stderr.strip()[-500:]}")
            ready.write_text(PUBLISHED_VERSION)
    return PublishedSDK(python, script)
