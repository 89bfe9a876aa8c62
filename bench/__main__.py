"""``python -m bench [--quick] [--only submit,e2e,...]`` (``make bench``): every benchmark, one after another.

Each one also runs alone (``python -m bench.<name> [--quick]``), prints its
numbers and writes ``bench/results/<name>.json``. This runs each in its own
process, bounded in time, then prints one table of the headline numbers
against their goals and writes ``bench/results/summary.json``.

=========  ==================================================  ===========================
name       what                                                 goal
=========  ==================================================  ===========================
submit     accepted jobs/s vs a bare aiohttp ceiling            >= 0.5 x ceiling
e2e        jobs/s submit → webhook vs SAQ and arq               >= 1 x the faster baseline (issue 19); moonshot 2 x
routing    accept → start of the outbound send, light load      p50 <= 1 ms, p99 <= 5 ms
memory     Redis bytes per queued job (200-byte body)           <= 1.5 KB
race       race iad/lax/ord vs iad alone (simulated latency)    p50 <= fastest + 10 ms
pacing     rate accuracy, isolation, fairness (bench.pacing)    see bench/pacing.py
=========  ==================================================  ===========================

Everything runs on loopback; ``--quick`` keeps the whole run to about three
minutes, the full run to about ten.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from typing import Any

import orjson

from ._procs import REPO

RESULTS = REPO / "bench" / "results"
# name -> (module, time limit in s: quick, full)
BENCHES: dict[str, tuple[str, tuple[int, int]]] = {
    "submit": ("bench.submit", (180, 600)),
    "e2e": ("bench.e2e", (300, 600)),
    "routing": ("bench.routing", (120, 180)),
    "memory": ("bench.memory", (180, 420)),
    "race": ("bench.race", (120, 240)),
    "pacing": ("bench.pacing", (300, 600)),
}


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return orjson.loads(path.read_bytes()) if path.exists() else None


def _rows(name: str, r: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(measure, value, goal, met?) lines for the table."""
    if name == "submit":
        out = []
        for mode in sorted({x.get("mode", "scheduled") for x in r["rows"]}):
            rows = [x for x in r["rows"] if x.get("mode", "scheduled") == mode]
            best = max(rows, key=lambda x: x["ratio"] or 0)
            at32 = next((x for x in rows if x["concurrency"] == 32), None)
            out += [
                (
                    f"{mode}: accepted/s (conc {best['concurrency']})",
                    f"{best['edge_accepted_per_s']:.0f} vs ceiling {best['ceiling_per_s']:.0f}",
                    ">= 0.5 x",
                    None,
                ),
                (f"{mode}: ratio to ceiling (best level)", f"{best['ratio']}", ">= 0.5", (best["ratio"] or 0) >= 0.5),
            ]
            if at32 is not None:
                beside = f" (the ceiling's {at32['ceiling_p99_ms']} ms)" if "ceiling_p99_ms" in at32 else ""
                out.append((f"{mode}: p99 at conc 32", f"{at32['edge_p99_ms']} ms{beside}", "<= 10 ms", at32["edge_p99_ms"] <= 10))
        return out
    if name == "e2e":
        out = []
        for system, s in r["systems"].items():
            lat = s["submit_to_webhook_ms"]
            out.append((f"{system} jobs/s", f"{s['jobs_per_s']}  (p50 {lat['p50']:.0f} / p99 {lat['p99']:.0f} ms)", "", None))
        ratio = r.get("ratio_vs_faster_baseline")
        how = f" (batches of {r['submit_batch']})" if r.get("submit_batch") else " (the SDK, coalescing)" if r.get("sdk") else ""
        out.append((f"ezthrottle / faster baseline{how}", f"{ratio}", ">= 1", None if ratio is None else ratio >= 1))
        out.append(("  the moonshot", f"{ratio}", ">= 2", None if ratio is None else ratio >= 2))
        return out
    if name == "routing":
        a, s = r["accept_to_send_ms"], r["created_to_target_ms"]
        share = f"{a['n']} of {r['jobs']} at once"

        def within(v: Any, goal: float) -> bool | None:
            return None if not isinstance(v, (int, float)) else v <= goal

        return [
            ("accept -> send p50", f"{a['p50']} ms ({share})", "<= 1 ms", within(a["p50"], 1)),
            ("accept -> send p99", f"{a['p99']} ms", "<= 5 ms", within(a["p99"], 5)),
            ("created -> target p50 / p99", f"{s['p50']} / {s['p99']} ms (stricter: see bench/routing.py)", "", None),
        ]
    if name == "memory":
        default = r.get("redis_defaults", {}).get("bytes_per_job")
        return [
            (
                "bytes per queued job (up-local Redis)",
                f"{r['bytes_per_job']:.0f} ({r['accepted']} jobs)",
                "<= 1536",
                r["bytes_per_job"] <= 1536,
            ),
            ("bytes per queued job (Redis defaults)", f"{default:.0f}" if default else "-", "", None),
        ]
    if name == "race":
        single, race = r["fastest_single_region_iad_ms"], r["race_iad_lax_ord_ms"]
        return [
            ("iad alone p50 / p99", f"{single['p50']:.0f} / {single['p99']:.0f} ms", "", None),
            ("race p50 / p99", f"{race['p50']:.0f} / {race['p99']:.0f} ms", "", None),
            (
                "race p50 - fastest p50",
                f"{r['race_p50_minus_fastest_p50_ms']:.0f} ms",
                "<= 10 ms",
                r["race_p50_minus_fastest_p50_ms"] <= 10,
            ),
            ("winners", " ".join(f"{k}:{v}" for k, v in r["winners"].items()), "", None),
        ]
    if name == "pacing":
        out = []
        for n in (2, 20):
            x = r.get(f"rate_n{n}")
            if x:
                ok = x["achieved_over_n"] >= 0.98 and x["provoked_429"] == 0 and x["max_in_any_1s_window"] <= n + 1
                out.append(
                    (
                        f"rate N={n}: achieved/N, 429s, max in 1 s",
                        f"{x['achieved_over_n']}, {x['provoked_429']}, {x['max_in_any_1s_window']}",
                        f">=0.98, 0, <={n + 1}",
                        ok,
                    )
                )
        iso = r.get("isolation")
        if iso:
            p99 = iso["with_backlog_ms"]["p99"]
            out.append(("isolation: other domain p99", f"{p99} ms (idle {iso['baseline_idle_ms']['p99']})", "<= 100 ms", p99 <= 100))
        fair = r.get("fairness")
        if fair:
            out.append(("fairness: B's worst delay", f"{fair['b_max_ms']} ms", "<= 1500 ms", fair["b_max_ms"] <= 1500))
        return out
    return []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="every scenario shortened (about three minutes in all)")
    p.add_argument("--only", default=",".join(BENCHES), help="comma list of: " + ", ".join(BENCHES))
    a = p.parse_args(argv)
    chosen = [n for n in BENCHES if n in {x.strip() for x in a.only.split(",")}]
    extra = ["--quick"] if a.quick else []
    status: dict[str, str] = {}
    started = time.monotonic()
    for name in chosen:
        module, limits = BENCHES[name]
        limit = limits[0] if a.quick else limits[1]
        print(f"\n#### {name} ({module}{' --quick' if a.quick else ''}; at most {limit} s)\n", flush=True)
        (RESULTS / f"{name}.json").unlink(missing_ok=True)  # never report an old run's numbers
        t0 = time.monotonic()
        try:
            rc = subprocess.run([sys.executable, "-m", module, *extra], cwd=REPO, timeout=limit).returncode
            status[name] = "ok" if rc == 0 else f"failed (exit {rc})"
        except subprocess.TimeoutExpired:
            status[name] = f"timed out after {limit} s"
        print(f"\n({name}: {status[name]} in {time.monotonic() - t0:.0f} s)", flush=True)

    table: list[dict[str, Any]] = []
    print(f"\n{'=' * 100}\n{'scenario':<9} {'measure':<40} {'value':<36} {'goal':<12} met")
    for name in chosen:
        r = _load(name) if status[name] == "ok" else None
        if r is None:
            print(f"{name:<9} {status[name]}")
            table.append({"scenario": name, "status": status[name]})
            continue
        for measure, value, goal, met in _rows(name, r):
            mark = "" if met is None else ("yes" if met else "NO")
            print(f"{name:<9} {measure:<40} {value:<36} {goal:<12} {mark}")
            table.append({"scenario": name, "measure": measure, "value": value, "goal": goal, "met": met})
    total = time.monotonic() - started
    print(f"{'=' * 100}\n{len(chosen)} scenarios in {total:.0f} s; details in bench/results/*.json")
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": a.quick,
        "seconds": round(total),
        "status": status,
        "table": table,
    }
    (RESULTS / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    failed = [n for n, s in status.items() if s != "ok"]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
