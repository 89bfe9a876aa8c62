"""``python -m bench [--quick]`` (``make bench``): every benchmark, one after another.

Each one is also runnable alone (``python -m bench.pacing``, ``python -m
bench.submit``), prints its numbers and writes ``bench/results/<name>.json``.
"""

from __future__ import annotations

import subprocess
import sys

from ._procs import REPO

BENCHES = ("bench.pacing", "bench.submit")


def main() -> int:
    extra = [a for a in sys.argv[1:] if a == "--quick"]
    failed = []
    for module in BENCHES:
        print(f"\n#### {module}\n", flush=True)
        if subprocess.run([sys.executable, "-m", module, *extra], cwd=REPO, timeout=3600).returncode != 0:
            failed.append(module)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
