"""Submission throughput and latency, against a bare-aiohttp ceiling in the same run.

    python -m bench.submit [--quick] [--duration 20] [--levels 1,8,32,64] [--mode scheduled,due_now] [--edge-workers 1,2]
                           [--profile LABEL]

A load generator in its own process posts jobs to one edge at rising
concurrency. Every 201 means the job is durably in Redis (record, idempotency
key, and its place to wait). The ceiling is a bare aiohttp endpoint that only
parses the same JSON and answers 201. Two modes:

- ``scheduled``: jobs carry a ``retry_at`` an hour ahead, so the edge's
  executor stays idle and only the accept path is measured;
- ``due_now``: jobs are due at once, spread over ten loopback target domains
  (one sink process, ten ports) whose limits are raised, so the edge executes
  them while the load runs, as users' jobs mostly are.

``--edge-workers 1,2,1,2`` measures the edge with each of those numbers of
worker processes on its port (``EZT_EDGE_WORKERS``) in turn, against the same
ceiling, and reports each count's jobs/s against the first count's
(``scaling``): alternate them to spread drift over both.

Each level measures the ceiling and then the edge right after it (one pair
per worker count), so drift between minutes falls on both alike; the
ceiling's own p99 is reported beside the edge's. In ``due_now`` mode the
jobs an edge accepted are still being sent (paced) after its load ends: the
next measurement waits until the targets have had them all.

Goal: accepted jobs/s at least 50% of the ceiling in both modes, p99 <= 10 ms
at concurrency 32. A closed loop of 32 clients waits 32 / (jobs/s) on average
(Little's law): a p99 of 10 ms needs well over 3,200 jobs/s, which the ceiling
itself reaches on this 2-core machine only when it is quiet; read the edge's
p99 against the ceiling's. Results: bench/results/submit.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import time

import orjson

from . import _profile
from ._cluster import cpu_s
from ._procs import REPO, create_key, edge_env, free_port, redis_server, service


def _load(url: str, key: str, concurrency: int, duration_s: float, targets: list[str] | None = None) -> dict[str, object]:
    due_now = ["--due-now", "--target", ",".join(targets)] if targets else []
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
            *due_now,
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        timeout=duration_s + 60,
    )
    return orjson.loads(out.stdout)


PROFILES = REPO / "bench" / "results" / "profiles"
TARGET_DOMAINS = 10
DRAIN_S = 120.0  # longest wait for a due_now level's jobs to reach the targets (10 domains x 100/s)


def _sent(sink: str) -> int:
    """The target requests the sink has had in all."""
    import urllib.request

    with urllib.request.urlopen(f"{sink}/stats", timeout=5) as resp:  # loopback only
        return int(orjson.loads(resp.read())["target_requests"])


def _drain(sink: str, sent: int, timeout_s: float) -> None:
    """Wait (bounded) until the sink has had ``sent`` target requests in all: a due_now level's backlog,
    still being sent after its load ended, would otherwise run beside the next measurement."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _sent(sink) >= sent:
            return
        time.sleep(0.2)


async def _raise_limits(redis_url: str, ports: list[int]) -> None:
    from ezthrottle_server.common.redisconn import connect
    from ezthrottle_server.pacing.overrides import apply_overrides, parse_overrides

    redis = connect(redis_url)
    try:
        lines = "".join(f"  127.0.0.1:{p}: {{rps: 100, max_concurrent: 64}}\n" for p in ports)
        await apply_overrides(redis, parse_overrides("domains:\n" + lines))
    finally:
        await redis.aclose()


def _measure(mode: str, levels: list[int], duration: float, edge_workers: list[int], profile: str | None = None) -> list[dict[str, object]]:
    """Each worker count, its edge alone; each level: the ceiling, then that edge, one right after the other, so that the
    machine's drift between minutes falls on both sides of each ratio alike. ``profile``: py-spy
    records each edge (its worker processes too) while its load runs, as ``<profile>-<mode>-c<level>-<n>w-edge``."""
    rows = []
    with contextlib.ExitStack() as stack:
        redis_url = stack.enter_context(redis_server())
        key = asyncio.run(create_key(redis_url))
        base_port = free_port()
        sink_ports = [free_port() for _ in range(TARGET_DOMAINS)]
        targets = [f"http://127.0.0.1:{p}/t/submit" for p in sink_ports] if mode == "due_now" else None
        base_url = f"http://127.0.0.1:{base_port}"
        stack.enter_context(service("bench.baseline_server", {"EZT_PORT": str(base_port)}, f"{base_url}/readyz", "baseline"))
        sink_env = {"EZT_PORT": str(sink_ports[0]), "EZT_EXTRA_PORTS": ",".join(map(str, sink_ports[1:]))}
        stack.enter_context(service("bench.sink", sink_env, f"http://127.0.0.1:{sink_ports[0]}/readyz", f"sink-{mode}"))
        sink_url = f"http://127.0.0.1:{sink_ports[0]}"
        if targets:
            asyncio.run(_raise_limits(redis_url, sink_ports))
        accepted = 0
        for i, n in enumerate(edge_workers):
            # One edge up at a time: the edges of one region execute each other's due jobs, so an edge left up beside
            # the measured one would spend the same cores on them (its own machine's, in a real deployment).
            edge_port = free_port()
            env = edge_env(redis_url, "iad", edge_port, EZT_EDGE_WORKERS=str(n))
            url = f"http://127.0.0.1:{edge_port}"
            with service("ezthrottle_server.edge", env, f"{url}/readyz", f"edge-submit-{mode}-{i}-{n}w") as proc:
                for c in levels:
                    b = _load(base_url, key, c, duration)
                    with contextlib.ExitStack() as spy:
                        if profile:
                            spy.enter_context(_profile.recording({"edge": proc.pid}, PROFILES, f"{profile}-{mode}-c{c}-{n}w"))
                        sent0, cpu0 = (_sent(sink_url) if targets else 0), cpu_s(proc.pid)
                        e = _load(url, key, c, duration, targets)
                        sent1, cpu1 = (_sent(sink_url) if targets else 0), cpu_s(proc.pid)
                    took_s = float(e["duration_s"])  # type: ignore[arg-type]
                    if targets:  # the jobs accepted are sent after the load too (paced): let them drain before the next ceiling
                        accepted += int(e["accepted"])  # type: ignore[call-overload]
                        _drain(sink_url, accepted, timeout_s=DRAIN_S)
                    rows.append(
                        {
                            "mode": mode,
                            "edge_workers": n,
                            "concurrency": c,
                            "edge_accepted_per_s": e["accepted_per_s"],
                            "edge_p50_ms": e["p50_ms"],
                            "edge_p99_ms": e["p99_ms"],
                            "ceiling_per_s": b["accepted_per_s"],
                            "ceiling_p50_ms": b["p50_ms"],
                            "ceiling_p99_ms": b["p99_ms"],
                            "ratio": round(e["accepted_per_s"] / b["accepted_per_s"], 3) if b["accepted_per_s"] else None,  # type: ignore[operator]
                            "edge_statuses": e["statuses"],
                            # what else the edge did meanwhile: the sends it made during the load (due_now), and its CPU
                            # per accepted job (the sends included), from /proc
                            "sent_during_load_per_s": round((sent1 - sent0) / took_s, 1) if targets else 0,
                            "edge_cpu_us_per_accepted": round(1e6 * (cpu1 - cpu0) / max(1, int(e["accepted"])), 1),  # type: ignore[call-overload]
                        }
                    )
    return rows


def _scaling(rows: list[dict[str, object]], edge_workers: list[int]) -> dict[str, float]:
    """Mean jobs/s of each worker count over that of the first count, by mode and concurrency."""
    means: dict[tuple[object, object, object], list[float]] = {}
    for r in rows:
        means.setdefault((r["mode"], r["concurrency"], r["edge_workers"]), []).append(float(r["edge_accepted_per_s"]))  # type: ignore[arg-type]
    out = {}
    for (mode, c, n), values in means.items():
        base = means.get((mode, c, edge_workers[0]))
        if n != edge_workers[0] and base:
            out[f"{mode} c={c} {n}w/{edge_workers[0]}w"] = round((sum(values) / len(values)) / (sum(base) / len(base)), 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 s per level")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per concurrency level")
    p.add_argument("--levels", default="1,8,32,64")
    p.add_argument("--mode", default="scheduled,due_now", help="comma list: scheduled, due_now")
    p.add_argument("--edge-workers", default="1", help="comma list: the edge's worker processes (EZT_EDGE_WORKERS), one run each")
    p.add_argument(
        "--profile",
        metavar="LABEL",
        help="py-spy records the edge during each of its loads: bench/results/profiles/LABEL-<mode>-c<level>-<n>w-edge.{svg,txt,raw}",
    )
    a = p.parse_args()
    edge_workers = [int(x) for x in a.edge_workers.split(",")]
    duration = 3.0 if a.quick else a.duration
    levels = [int(x) for x in a.levels.split(",")]
    modes = [m.strip() for m in a.mode.split(",") if m.strip()]
    unknown = set(modes) - {"scheduled", "due_now"}
    if unknown:
        p.error(f"unknown mode(s): {', '.join(sorted(unknown))}")
    rows = [row for mode in modes for row in _measure(mode, levels, duration, edge_workers, a.profile)]
    best = {m: max((r for r in rows if r["mode"] == m), key=lambda r: r["ratio"] or 0) for m in modes}  # type: ignore[arg-type,return-value]
    result = {
        "scenario": "submit",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "duration_s": duration,
        "rows": rows,
        "best_ratio": {m: b["ratio"] for m, b in best.items()},
        "scaling": _scaling(rows, edge_workers),
        "goal": "edge accepted/s >= 0.5 x ceiling in each mode; p99 <= 10 ms at concurrency 32",
    }
    out = REPO / "bench" / "results" / "submit.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    head = f"{'mode':>10} {'workers':>7} {'conc':>5} {'edge/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
    print(f"{head} {'ceiling/s':>10} {'c. p99 ms':>9} {'ratio':>6} {'sent/s':>7} {'edge µs/job':>11}")
    for r in rows:
        print(
            f"{r['mode']:>10} {r['edge_workers']:>7} {r['concurrency']:>5} {r['edge_accepted_per_s']:>9} {r['edge_p50_ms']:>8}"
            f" {r['edge_p99_ms']:>8} {r['ceiling_per_s']:>10} {r['ceiling_p99_ms']:>9} {r['ratio']:>6}"
            f" {r['sent_during_load_per_s']:>7} {r['edge_cpu_us_per_accepted']:>11}"
        )
    for key, ratio in result["scaling"].items():  # type: ignore[union-attr]
        print(f"scaling {key}: {ratio}")
    for m, b in best.items():
        print(f"{m}: best ratio {b['ratio']} at concurrency {b['concurrency']}, {b['edge_workers']} edge worker(s) (goal >= 0.5)")
    print(f"written to {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
