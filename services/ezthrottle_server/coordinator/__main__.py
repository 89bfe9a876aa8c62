"""``python -m ezthrottle_server.coordinator``: run a coordinator (one active, others stand by)."""

from __future__ import annotations

from ..common.config import load_settings
from ..common.logs import setup_logging
from ..common.service import run
from .app import create_app


def main() -> None:
    settings = load_settings("coordinator")
    setup_logging("coordinator", settings.node_id)

    async def factory():  # noqa: ANN202
        return create_app(settings)

    run(factory, settings.host, settings.port)


if __name__ == "__main__":
    main()
