"""The quota's month of an instant, kept across calls (common/quotas.py ``month_at_ms``)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from ezthrottle_server.common.quotas import month_at_ms, month_of


def ms(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp() * 1000)


def test_each_side_of_a_month_boundary_is_its_own_month():
    assert month_at_ms(ms(2026, 12, 31, 23, 59, 59) + 999) == "202612"
    assert month_at_ms(ms(2027, 1, 1)) == "202701"
    assert month_at_ms(ms(2027, 1, 1) - 1) == "202612"  # back again: the kept month is not the answer
    assert month_at_ms(ms(2028, 2, 29, 12)) == "202802"
    assert month_at_ms(ms(2028, 3, 1)) == "202803"


def test_it_agrees_with_month_of_in_any_order():
    rng = random.Random(7)
    instants = [rng.randrange(0, ms(2100, 1, 1)) for _ in range(5000)]
    instants += [ms(y, m, 1) + d for y in (1999, 2026, 2027) for m in range(1, 13) for d in (-1, 0, 1)]
    rng.shuffle(instants)
    for t in instants:
        assert month_at_ms(t) == month_of(datetime.fromtimestamp(t / 1000, UTC)), t
