"""``python -m ezthrottle_server.coordinator``: run a coordinator (one active, others stand by)."""

from __future__ import annotations

from ..common.service import main_for
from .app import create_app


def main() -> None:
    main_for("coordinator", create_app)


if __name__ == "__main__":
    main()
