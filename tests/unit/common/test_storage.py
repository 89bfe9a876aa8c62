"""The byte budget's buckets and settings (common/storage.py); its counting runs on real Redis in
tests/integration/edge/test_byte_budget.py."""

import random
from pathlib import Path

import pytest

from ezthrottle_server.common import storage
from ezthrottle_server.common.config import ConfigError, load_settings


def settings(tmp_path: Path, **env: str):
    path = tmp_path / "regions.yaml"
    path.write_text("regions:\n  - id: iad\n    port: 8701\n")
    return load_settings("edge", env={"EZT_REGION": "iad", **env}, regions_file=path)


@pytest.mark.parametrize("ttl_s", [1, 3, 8, 3600, 7 * 24 * 3600])
def test_a_record_is_counted_in_a_live_bucket_for_as_long_as_it_is_kept(ttl_s):
    rng = random.Random(ttl_s)
    width = storage.bucket_width_ms(ttl_s)
    for _ in range(2000):
        ended = rng.randrange(10**12, 2 * 10**12)
        alive_at = ended + rng.randrange(0, ttl_s * 1000)  # the record expires ttl after it ended
        assert storage.kept_bucket(ttl_s, ended) in storage.live_buckets(ttl_s, alive_at)
        # and not for much longer: one bucket's width past the expiry at most
        gone_at = ended + ttl_s * 1000 + width
        assert storage.kept_bucket(ttl_s, ended) not in storage.live_buckets(ttl_s, gone_at)
    assert len(storage.live_buckets(ttl_s, 10**12)) <= storage.KEPT_BUCKETS + 1


def test_off_in_the_local_profile_a_share_in_production_and_a_number_when_set(tmp_path):
    assert settings(tmp_path).admission_max_bytes_per_customer == 0
    assert settings(tmp_path, EZT_PROFILE="production").admission_max_bytes_per_customer == storage.AUTO
    assert settings(tmp_path, EZT_PROFILE="production", EZT_ADMISSION_MAX_BYTES_PER_CUSTOMER="0").admission_max_bytes_per_customer == 0
    assert settings(tmp_path, EZT_ADMISSION_MAX_BYTES_PER_CUSTOMER="5000000").admission_max_bytes_per_customer == 5_000_000


@pytest.mark.parametrize("value", ["-2", "lots"])
def test_a_budget_below_zero_or_not_a_number_is_refused(tmp_path, value):
    with pytest.raises(ConfigError, match="EZT_ADMISSION_MAX_BYTES_PER_CUSTOMER"):
        settings(tmp_path, EZT_ADMISSION_MAX_BYTES_PER_CUSTOMER=value)


@pytest.mark.parametrize(
    ("info", "ceiling"),
    [({"maxmemory": 1000, "total_system_memory": 50}, 900), ({"maxmemory": 0, "total_system_memory": 1000}, 800)],
)
def test_the_memory_ceiling_is_the_admission_one(info, ceiling):
    assert storage.memory_ceiling(info) == ceiling
