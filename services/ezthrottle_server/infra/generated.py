"""Files rendered from code and committed (dashboards, Prometheus configs): write them, or check them."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path


def write_or_check(files: Mapping[Path, str], *, check: bool, command: str) -> int:
    """Write each file (``check``: only compare it with what is committed); 1 when a committed one is out of date.

    ``command`` is what regenerates them, for the message.
    """
    stale = []
    for path, text in files.items():
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"out of date (run {command}): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0
