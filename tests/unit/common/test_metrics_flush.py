"""A worker process's metrics (PROMETHEUS_MULTIPROC_DIR) reach its file when flushed, not at every change.

Each case runs a fresh interpreter: the value class is chosen when the metrics
module is first imported, from the environment the process started with.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SERVICES = Path(__file__).resolve().parents[3] / "services"

READ = """
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

def in_files(name, **labels):
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=DIR)
    found = [s.value for m in registry.collect() for s in m.samples if s.name == name and labels.items() <= s.labels.items()]
    return found[0] if found else None
"""


def run(code: str, metrics_dir: Path | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["PYTHONPATH"] = str(SERVICES)
    if metrics_dir is not None:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    prelude = f"DIR = {str(metrics_dir)!r}\n" + READ
    done = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_changes_reach_the_file_at_a_flush_and_a_scrape_flushes_first(tmp_path: Path) -> None:
    out = run(
        """
        import asyncio
        from ezthrottle_server.common import metrics
        assert metrics.BUFFERED
        attempts = metrics.ATTEMPTS.labels("iad", "2xx")
        latency = metrics.ATTEMPT_LATENCY.labels("iad")
        inflight = metrics.INFLIGHT.labels("iad")
        for _ in range(5):
            attempts.inc()
            latency.observe(0.02)
        inflight.inc(3)
        inflight.dec()
        print(in_files("ezt_attempts_total", region="iad", status_class="2xx"))  # written at the child's creation: 0
        metrics.flush()
        print(in_files("ezt_attempts_total", region="iad", status_class="2xx"), in_files("ezt_attempt_latency_seconds_count", region="iad"),
              in_files("ezt_edge_inflight_attempts", region="iad"))
        attempts.inc(2)
        metrics.use_multiprocess_dir(DIR)
        page = asyncio.run(metrics.metrics_handler(None)).body.decode()
        print([line for line in page.splitlines() if line.startswith('ezt_attempts_total{region="iad",status_class="2xx"}')])
        """,
        tmp_path,
    ).splitlines()
    assert out[0] in ("0.0", "None")
    assert out[1].split() == ["5.0", "5.0", "2.0"]
    assert out[2] == '[\'ezt_attempts_total{region="iad",status_class="2xx"} 7.0\']'


def test_what_was_not_flushed_yet_is_written_at_exit(tmp_path: Path) -> None:
    run(
        """
        from ezthrottle_server.common import metrics
        metrics.JOBS_SUBMITTED.labels("iad").inc(4)
        """,
        tmp_path,
    )
    out = run('print(in_files("ezt_jobs_submitted_total", region="iad"))', tmp_path)
    assert out.strip() == "4.0"


def test_a_service_flushes_them_periodically_while_it_runs(tmp_path: Path) -> None:
    out = run(
        """
        import asyncio, time
        from ezthrottle_server.common import metrics
        async def main():
            flushing = asyncio.create_task(metrics.flush_periodically())
            metrics.JOBS_SUBMITTED.labels("iad").inc(3)
            deadline = time.monotonic() + 5
            while in_files("ezt_jobs_submitted_total", region="iad") != 3.0 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            print(in_files("ezt_jobs_submitted_total", region="iad"))
            flushing.cancel()
        asyncio.run(main())
        """,
        tmp_path,
    )
    assert out.strip() == "3.0"


def test_one_process_keeps_the_librarys_values(tmp_path: Path) -> None:
    out = run(
        """
        from ezthrottle_server.common import metrics
        metrics.JOBS_SUBMITTED.labels("iad").inc()
        print(metrics.BUFFERED, metrics.JOBS_SUBMITTED.labels("iad")._value.get())
        """,
        None,
    )
    assert out.split() == ["False", "1.0"]
