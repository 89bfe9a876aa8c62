"""py-spy recordings of running processes: a flame graph (SVG) and the top frames as text.

:func:`recording` attaches one ``py-spy record`` to each process (and its
worker processes) for as long as the ``with`` block runs, sampling without
pausing the process (``--nonblocking``), so its CPU time is the run's. Each
process gives ``<tag>-<name>.svg`` (a flame graph: a frame's width is its
share of the samples, its callers below it) and ``<tag>-<name>.txt`` (the
frames with the most samples of their own, then with the most samples under
them), from the collapsed stacks py-spy writes (``<tag>-<name>.raw``).
Samples are of busy threads only: a loop waiting on its selector is not in them.
"""

from __future__ import annotations

import contextlib
import html
import signal
import subprocess
import sys
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

TOP = 30


def _py_spy() -> str:
    return str(Path(sys.executable).with_name("py-spy"))


@contextlib.contextmanager
def recording(pids: dict[str, int], out_dir: Path, tag: str, rate: int = 200) -> Iterator[None]:
    """Record each of ``pids`` (name -> pid) while the block runs; write the profiles when it ends."""
    out_dir.mkdir(parents=True, exist_ok=True)
    spies: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, pid in pids.items():
            raw = out_dir / f"{tag}-{name}.raw"
            argv = [_py_spy(), "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "--function", "--nonblocking"]
            spies[name] = subprocess.Popen([*argv, "--subprocesses", "-o", str(raw)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        yield
    finally:
        for spy in spies.values():
            spy.send_signal(signal.SIGINT)
        for name, spy in spies.items():
            try:
                _, err = spy.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                spy.kill()
                _, err = spy.communicate()
            raw = out_dir / f"{tag}-{name}.raw"
            if not raw.exists():
                print(f"  py-spy wrote no profile for {name}: {err.decode(errors='replace')[-300:]}", file=sys.stderr)
                continue
            stacks = read_collapsed(raw.read_text())
            (out_dir / f"{tag}-{name}.svg").write_text(flame_svg(stacks, f"{tag}: {name}"))
            (out_dir / f"{tag}-{name}.txt").write_text(top_text(stacks, f"{tag}: {name}"))


def read_collapsed(text: str) -> Counter[tuple[str, ...]]:
    """``frame;frame;frame count`` lines (py-spy's raw format) as stack -> samples."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in text.splitlines():
        path, _, count = line.rpartition(" ")
        if path and count.isdigit():
            stacks[tuple(f for f in path.split(";") if not f.startswith("process "))] += int(count)
    return stacks


def top_frames(stacks: Counter[tuple[str, ...]]) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """Total samples; frames by samples of their own (the leaf), and by samples under them (each stack once)."""
    own: Counter[str] = Counter()
    under: Counter[str] = Counter()
    for stack, n in stacks.items():
        if stack:
            own[stack[-1]] += n
        for frame in set(stack):
            under[frame] += n
    return sum(stacks.values()), own.most_common(TOP), under.most_common(TOP)


def top_text(stacks: Counter[tuple[str, ...]], title: str) -> str:
    total, own, under = top_frames(stacks)
    lines = [f"{title}: {total} samples of busy threads", "", "own  %  frame"]
    lines += [f"{100 * n / max(total, 1):5.1f}  {frame}" for frame, n in own]
    lines += ["", "under  %  frame"]
    lines += [f"{100 * n / max(total, 1):5.1f}  {frame}" for frame, n in under]
    return "\n".join(lines) + "\n"


def flame_svg(stacks: Counter[tuple[str, ...]], title: str, width: int = 1600, row: int = 16) -> str:
    """A flame graph: the root at the bottom, each frame as wide as its share of the samples."""
    tree: dict[str, list] = {}  # frame -> [samples, children]
    for stack, n in sorted(stacks.items()):
        level = tree
        for frame in stack:
            node = level.setdefault(frame, [0, {}])
            node[0] += n
            level = node[1]
    total = max(sum(stacks.values()), 1)
    depth = max((len(s) for s in stacks), default=0)
    height = (depth + 2) * row
    rects: list[str] = []

    def draw(level: dict[str, list], x: float, d: int) -> None:
        for frame, (n, children) in level.items():
            w = n / total * width
            if w >= 0.3:
                y = height - (d + 1) * row
                hue = zlib.crc32(frame.split(" (")[0].encode()) % 60
                label = html.escape(frame)
                text = f'<text x="{x + 3:.1f}" y="{y + row - 4}">{html.escape(frame[: int(w / 7)])}</text>' if w > 35 else ""
                rects.append(
                    f"<g><title>{label} ({n} samples, {100 * n / total:.1f}%)</title>"
                    f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 1}" fill="hsl({hue},85%,60%)"/>{text}</g>'
                )
                draw(children, x, d + 1)
            x += w

    draw(tree, 0.0, 0)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + row}" font-family="monospace" font-size="11">'
        f'<text x="4" y="{row - 4}">{html.escape(title)}: {total} samples</text>'
        f'<g transform="translate(0,{row})">{"".join(rects)}</g></svg>\n'
    )
