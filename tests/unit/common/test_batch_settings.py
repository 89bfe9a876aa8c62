"""``EZT_MAX_BATCH_JOBS`` and the batch body limit it gives (``POST /api/v1/jobs/batch``)."""

from pathlib import Path

import pytest

from ezthrottle_server.common.config import ConfigError, load_settings


def settings(tmp_path: Path, **env: str):
    path = tmp_path / "regions.yaml"
    path.write_text("regions:\n  - id: iad\n    port: 8701\n")
    return load_settings("edge", env={"EZT_REGION": "iad", **env}, regions_file=path)


def test_a_hundred_jobs_by_default_and_a_body_of_ten_single_bodies(tmp_path):
    s = settings(tmp_path)
    assert s.max_batch_jobs == 100 and s.max_batch_body_bytes == 10 * s.max_body_bytes


def test_the_environment_sets_it_and_the_body_limit_follows_up_to_ten(tmp_path):
    s = settings(tmp_path, EZT_MAX_BATCH_JOBS="4", EZT_MAX_BODY_BYTES="1000")
    assert (s.max_batch_jobs, s.max_batch_body_bytes) == (4, 4000)
    assert settings(tmp_path, EZT_MAX_BATCH_JOBS="1").max_batch_body_bytes == s.with_overrides(max_body_bytes=1024 * 1024).max_body_bytes


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_a_limit_below_one_or_not_a_number_is_refused(tmp_path, value):
    with pytest.raises(ConfigError, match="EZT_MAX_BATCH_JOBS"):
        settings(tmp_path, EZT_MAX_BATCH_JOBS=value)
