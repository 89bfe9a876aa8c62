"""Chaos tests: real service processes on loopback, killed and restarted.

``procs`` starts ``python -m ezthrottle_server.<role>`` processes the way
``make up-local`` does (their own process, env-configured), each logging to
a file under the test's tmp dir; at teardown every one still running is
stopped (SIGTERM, then SIGKILL). A failing test prints the tail of each log.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chaos.helpers import Procs, tail


@pytest.fixture
def procs(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Procs]:
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.stop_all()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            for proc in p.started:
                print(f"==> {proc.name} (exit {proc.popen.returncode}) <==\n{tail(proc.log)}\n")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
