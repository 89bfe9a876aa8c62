"""A serving process keeps what it built at start out of the garbage collector's reach, and collects
its youngest generation less often (common/service.py tune_gc)."""

import gc
from collections.abc import Iterator

import pytest

from ezthrottle_server.common.service import GC_YOUNG_THRESHOLD, tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_tuning_freezes_what_was_built_and_raises_the_young_threshold(restored_gc: None) -> None:
    _young, older, oldest = gc.get_threshold()
    built_at_start = [{"n": i} for i in range(1000)]  # alive when the service starts serving
    tune_gc()
    assert gc.get_freeze_count() >= len(built_at_start)
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, older, oldest)  # the older generations as they were
    collected = gc.get_stats()[0]["collections"]
    in_flight = [[{}] for _ in range(1500)]  # 3,000 objects alive at once (the jobs in flight): 4 collections at Python's 700
    assert gc.get_stats()[0]["collections"] == collected
    del in_flight
