"""Compare-and-set writes of a Redis hash, without MULTI (one slot of a cluster).

``replace_hash.lua`` (the whole hash at once) and ``swap_field.lua`` (one
field); the webhook secrets use both (``edge/secrets_api.py``, the console,
``ezthrottle-admin secrets reseal``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .scripting import ScriptRun


async def replace(run: ScriptRun, key: str, pairs: Sequence[Any], *, unless_changed: tuple[str, str | None] | None = None) -> bool:
    """Replace the hash with exactly ``pairs`` (field, value, ... in HSET's order) in one step (no reader sees old and new mixed).

    ``unless_changed``: (field, value read; None for absent): write only if the
    field still holds it. True when replaced, False when that field changed meanwhile.
    """
    guard, expected = unless_changed or ("", None)
    return int(await run(keys=[key], args=[guard, expected or "", *pairs])) == 1


async def swap_field(run: ScriptRun, key: str, field: str, *, expected: str, new: str) -> bool:
    """Set one field to ``new`` only if it still holds ``expected``: True when replaced."""
    return int(await run(keys=[key], args=[field, expected, new])) == 1
