"""The supervisor of a node's worker processes (common/workers.py), with stand-in workers.

The real edge and delivery workers are in tests/e2e/test_workers.py.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from ezthrottle_server.common import workers
from ezthrottle_server.common.config import Settings


def settings(metrics_dir: Path) -> Settings:
    return Settings(
        regions=(),
        redis_url="redis://unused",
        node_id="edge-t",
        host="127.0.0.1",
        port=0,
        edge_workers=2,
        metrics_multiproc_dir=str(metrics_dir),
    )


@pytest.mark.asyncio
async def test_workers_that_keep_crashing_are_restarted_then_the_supervisor_gives_up_with_exit_1(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(workers, "RESTART_PAUSE_S", 0.01)
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"left by a node that ran before")
    started = tmp_path / "started"
    note = f"open({str(started)!r}, 'a').write(os.environ['EZT_NODE_ID'] + ' ' + os.environ['EZT_LISTEN_FD'] + '\\n')"
    crash = f"import os; {note}; raise SystemExit(3)"
    supervisor = workers.Supervisor("edge", settings(metrics_dir), argv=[sys.executable, "-c", crash])
    assert await supervisor.run() == 1
    lines = started.read_text().split("\n")[:-1]
    # two started, then one more per exit until an exit more than MAX_RESTARTS within the window
    # (both may exit at once: the last one started may be stopped before it runs)
    assert workers.MAX_RESTARTS + 1 <= len(lines) <= workers.MAX_RESTARTS + 2
    assert {line.split()[0] for line in lines} == {"edge-t-w0", "edge-t-w1"}  # each slot keeps its name
    assert not (metrics_dir / "counter_1.db").exists()  # emptied at start


def test_one_socket_per_worker_on_one_port() -> None:
    socks = workers.listening_sockets("127.0.0.1", 0, 3)
    try:
        ports = {s.getsockname()[1] for s in socks}
        assert len(socks) == 3 and len(ports) == 1 and ports != {0}
    finally:
        for s in socks:
            s.close()


@pytest.mark.asyncio
async def test_a_port_taken_fails_the_start_and_leaves_nothing_behind(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        supervisor = workers.Supervisor("edge", settings(tmp_path).with_overrides(port=port, metrics_multiproc_dir=""))
        with pytest.raises(OSError):
            await supervisor.run()
    assert not Path(supervisor._metrics_dir).exists()  # its own metrics folder is gone
