"""Submission throughput and latency, against a bare-aiohttp ceiling in the same run.

    python -m bench.submit [--quick] [--duration 20] [--levels 1,8,32,64]

A load generator in its own process posts jobs to one edge at rising
concurrency. Every 201 means the job is durably in Redis (record, idempotency
key, delayed set). Jobs carry a ``retry_at`` an hour ahead so the edge's
executor stays idle and only the accept path is measured. The ceiling is a
bare aiohttp endpoint that only parses the same JSON and answers 201.
Goal: accepted jobs/s at least 50% of the ceiling. Results:
bench/results/submit.json.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time

import orjson

from ._procs import REPO, create_key, edge_env, free_port, redis_server, service


def _load(url: str, key: str, concurrency: int, duration_s: float) -> dict[str, object]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.loadgen",
            "--url",
            url,
            "--key",
            key,
            "--concurrency",
            str(concurrency),
            "--duration",
            str(duration_s),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        timeout=duration_s + 60,
    )
    return orjson.loads(out.stdout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 s per level")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per concurrency level")
    p.add_argument("--levels", default="1,8,32,64")
    a = p.parse_args()
    duration = 3.0 if a.quick else a.duration
    levels = [int(x) for x in a.levels.split(",")]
    rows = []
    with redis_server() as redis_url:
        key = asyncio.run(create_key(redis_url))
        edge_port, base_port = free_port(), free_port()
        with service("bench.baseline_server", {"EZT_PORT": str(base_port)}, f"http://127.0.0.1:{base_port}/readyz", "baseline"):
            baseline = {c: _load(f"http://127.0.0.1:{base_port}", key, c, duration) for c in levels}
        env = edge_env(redis_url, "iad", edge_port)
        with service("ezthrottle_server.edge", env, f"http://127.0.0.1:{edge_port}/readyz", "edge-submit"):
            edge = {c: _load(f"http://127.0.0.1:{edge_port}", key, c, duration) for c in levels}
    for c in levels:
        b, e = baseline[c], edge[c]
        rows.append(
            {
                "concurrency": c,
                "edge_accepted_per_s": e["accepted_per_s"],
                "edge_p50_ms": e["p50_ms"],
                "edge_p99_ms": e["p99_ms"],
                "ceiling_per_s": b["accepted_per_s"],
                "ceiling_p50_ms": b["p50_ms"],
                "ratio": round(e["accepted_per_s"] / b["accepted_per_s"], 3) if b["accepted_per_s"] else None,
                "edge_statuses": e["statuses"],
            }
        )
    best = max(rows, key=lambda r: r["edge_accepted_per_s"])
    result = {
        "scenario": "submit",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "duration_s": duration,
        "rows": rows,
        "best_ratio": best["ratio"],
        "goal": "edge accepted/s >= 0.5 x ceiling",
    }
    out = REPO / "bench" / "results" / "submit.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"{'conc':>5} {'edge/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'ceiling/s':>10} {'ratio':>6}")
    for r in rows:
        print(
            f"{r['concurrency']:>5} {r['edge_accepted_per_s']:>9} {r['edge_p50_ms']:>8} {r['edge_p99_ms']:>8}"
            f" {r['ceiling_per_s']:>10} {r['ratio']:>6}"
        )
    print(f"best ratio {best['ratio']} at concurrency {best['concurrency']} (goal >= 0.5); written to {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
