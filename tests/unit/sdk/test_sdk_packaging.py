"""``pip install ./sdk`` works on its own: httpx is the only dependency, no server import."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.published import offline

pytestmark = pytest.mark.timeout(600)

SDK = Path(__file__).resolve().parents[3] / "sdk"
PROBE = """
import importlib.metadata, importlib.resources, json, sys
import ezthrottle
from ezthrottle import EZThrottle, Step
payload = Step().url("https://api.example.com").method("post")._build_job_payload()
requires = importlib.metadata.requires("ezthrottle") or []
print(json.dumps({
    "version": ezthrottle.__version__,
    "payload": payload,
    "runtime_requires": [r for r in requires if "extra ==" not in r],
    "typed": (importlib.resources.files("ezthrottle") / "py.typed").is_file(),
    "server_modules": sorted(m for m in sys.modules if m.startswith("ezthrottle_server")),
}))
"""
NETWORK_HINTS = (
    "No matching distribution",
    "Could not find a version",
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Network is unreachable",
)


def test_sdk_installs_alone_into_a_fresh_virtualenv(tmp_path: Path) -> None:
    source = tmp_path / "sdk"
    shutil.copytree(SDK, source, ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"))
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(source)],
        capture_output=True,
        text=True,
        timeout=500,
    )
    if install.returncode != 0 and any(hint in install.stderr for hint in NETWORK_HINTS):
        offline(f"cannot download build or runtime dependencies: {install.stderr.strip()[-300:]}")
    assert install.returncode == 0, install.stderr
    probe = subprocess.run(
        [str(python), "-I", "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert found["payload"] == {"url": "https://api.example.com", "method": "POST"}
    assert [r.split(">")[0].split("<")[0] for r in found["runtime_requires"]] == ["httpx"]
    assert found["typed"] is True
    assert found["server_modules"] == []


def test_sdk_sources_never_mention_the_server_package() -> None:
    for path in (SDK / "ezthrottle").rglob("*.py"):
        assert "ezthrottle_server" not in path.read_text(), path
