"""``python -m ezthrottle_server.edge``: run one edge node (EZT_REGION picks the region)."""

from __future__ import annotations

from ..common.service import main_for
from .app import create_app


def main() -> None:
    main_for("edge", create_app)


if __name__ == "__main__":
    main()
