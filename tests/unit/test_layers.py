"""The services' layers: common -> pacing -> edge, coordinator, delivery -> admin, and no service imports another.

Read from the source (every ``import`` and ``from ... import`` of every module,
relative or absolute), so a shortcut across the layers fails here rather than
in a review. The folders not in the table (devcluster, infra) are tools that
start or render the services and may use any of them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "services" / "ezthrottle_server"
MAY_USE = {
    "common": {"common"},
    "pacing": {"common", "pacing"},
    "edge": {"common", "pacing", "edge"},
    "coordinator": {"common", "pacing", "coordinator"},
    "delivery": {"common", "pacing", "delivery"},
}


def _imported_areas(path: Path, root: Path = PACKAGE) -> set[str]:
    """The top-level areas of ezthrottle_server a module imports."""
    area_of_module = path.relative_to(root).parts
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's own package
                base = list(area_of_module[:-1])[: len(area_of_module) - node.level]
                parts = base + (node.module.split(".") if node.module else [])
                if not parts:  # "from .. import x": the names are areas themselves
                    found.update(a.name for a in node.names)
                    continue
                found.add(parts[0])
            elif node.module and node.module.startswith("ezthrottle_server."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("ezthrottle_server."))
    return found


@pytest.mark.parametrize("area", sorted(MAY_USE))
def test_an_area_imports_only_the_layers_under_it(area):
    wrong = {}
    for path in sorted((PACKAGE / area).rglob("*.py")):
        bad = {a for a in _imported_areas(path) if a in {*MAY_USE, "admin", "devcluster", "infra"} and a not in MAY_USE[area]}
        if bad:
            wrong[str(path.relative_to(PACKAGE))] = sorted(bad)
    assert wrong == {}, wrong


def test_the_check_sees_a_crossing(tmp_path):
    module = tmp_path / "edge" / "console" / "x.py"
    module.parent.mkdir(parents=True)
    module.write_text("from ...delivery.worker import DeliveryWorker\nfrom ..api import ROUTES\nimport ezthrottle_server.admin.cli\n")
    assert _imported_areas(module, tmp_path) == {"delivery", "edge", "admin"}
