"""``python -m ezthrottle_server.edge``: run one edge node (EZT_REGION picks the region)."""

from __future__ import annotations

from ..common.config import load_settings
from ..common.logs import setup_logging
from ..common.service import run
from .app import create_app


def main() -> None:
    settings = load_settings("edge")
    setup_logging("edge", settings.node_id)

    async def factory():  # noqa: ANN202
        return create_app(settings)

    run(factory, settings.host, settings.port)


if __name__ == "__main__":
    main()
