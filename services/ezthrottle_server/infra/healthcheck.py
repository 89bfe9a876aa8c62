"""The container health check: GET ``/healthz`` of this container's service.

    python -m ezthrottle_server.infra.healthcheck [--path /readyz] [--timeout-s 3]

Exit 0 when the service answers 200, 1 otherwise (Docker's HEALTHCHECK
contract). The port is the one the service listens on: ``EZT_PORT`` through
:func:`load_settings` (the image sets it; compose and the Kubernetes manifests
set it per service). Uses only the standard library's urllib: the slim image
has no curl.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

from ..common.config import ConfigError, load_settings


def check(port: int, path: str = "/healthz", timeout_s: float = 3.0) -> tuple[bool, str]:
    """(healthy, what was seen) for ``http://127.0.0.1:<port><path>``."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - loopback only
            return resp.status == 200, f"{url} answered {resp.status}"
    except urllib.error.HTTPError as exc:
        return False, f"{url} answered {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return False, f"{url} unreachable: {exc}"


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ezthrottle-healthcheck", description="exit 0 if this container's service is healthy")
    p.add_argument("--path", default="/healthz", help="path to GET (default /healthz; /readyz also checks Redis)")
    p.add_argument("--timeout-s", type=float, default=3.0)
    args = p.parse_args(argv)
    try:
        port = load_settings("healthcheck", env=env).port
    except ConfigError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    if not port:
        print("unhealthy: EZT_PORT is not set, so the service's port is unknown", file=sys.stderr)
        return 1
    ok, seen = check(port, args.path, args.timeout_s)
    print(("healthy: " if ok else "unhealthy: ") + seen, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
