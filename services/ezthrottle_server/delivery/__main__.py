"""``python -m ezthrottle_server.delivery``: run a delivery worker (several may run)."""

from __future__ import annotations

from ..common.service import main_for
from .app import create_app


def main() -> None:
    main_for("delivery", create_app)


if __name__ == "__main__":
    main()
