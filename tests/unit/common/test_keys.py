import re

from ezthrottle_server.common import keys


def _tag(key: str) -> str:
    return re.search(r"\{[^}]*\}", key).group(0)


def test_job_ids_carry_their_partition():
    job_id = keys.make_job_id(1_763_674_210_055, "0123456789abcdef", 7)
    assert keys.job_partition(job_id) == 7
    assert keys.job_partition("job_1_2p3") is None
    assert keys.job_partition("../../etc") is None


def test_keys_a_job_script_touches_share_one_hash_tag():
    job_id = keys.make_job_id(1_763_674_210_055, "0123456789abcdef", 3)
    tags = {
        _tag(k)
        for k in (
            keys.job(job_id),
            keys.attempts(job_id),
            keys.idempotency(3, "acme", "d"),
            keys.region_stream(3, "iad"),
            keys.region_stream(3, "lax"),
            keys.delayed(3),
            keys.deliveries(3),
        )
    }
    assert tags == {"{ezt:p3}"}
    assert _tag(keys.job(keys.make_job_id(1_763_674_210_055, "0123456789abcdef", 4))) != "{ezt:p3}"
