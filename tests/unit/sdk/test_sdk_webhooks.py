"""Webhook signatures: every documented reason, rotation, and agreement with 1.3.0."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from typing import Any

import pytest

from ezthrottle import (
    SIGNATURE_HEADER,
    EZThrottleError,
    WebhookVerificationError,
    sign_webhook,
    try_verify_with_secrets,
    verify_webhook_signature,
    verify_webhook_signature_strict,
    webhook_utils,
)

pytestmark = pytest.mark.timeout(600)  # the cross-checks may install the published SDK

SECRET = "whsec_primary_0123456789"
OLD_SECRET = "whsec_secondary_987654321"
BODY = b'{"job_id":"job_1","status":"success","response":{"status_code":200,"body":"\\u00e9t\\u00e9"}}'
NOW = 1_767_225_600


def test_header_format_is_t_and_hex_hmac_of_timestamp_dot_body() -> None:
    header = sign_webhook(BODY, SECRET, timestamp=NOW)
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert header == f"t={NOW},v1={expected}"
    assert SIGNATURE_HEADER == "X-EZThrottle-Signature"


def test_sign_defaults_to_now() -> None:
    before = int(time.time())
    timestamp = int(re.match(r"t=(\d+),", sign_webhook(BODY, SECRET)).group(1))  # type: ignore[union-attr]
    assert before <= timestamp <= int(time.time())


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("", "no_signature_header"),
        (None, "no_signature_header"),
        (f"t={NOW}", "missing_v1_signature"),
        (f"t={NOW},v1=", "missing_v1_signature"),
        ("garbage", "missing_v1_signature"),
        (f"t={NOW - 350},v1=00", "timestamp_expired (diff=350s, tolerance=300s)"),
        (f"t={NOW + 301},v1=00", "timestamp_expired (diff=301s, tolerance=300s)"),
        (f"t={NOW},v1=" + "0" * 64, "signature_mismatch"),
        ("t=yesterday,v1=00", "verification_error: invalid timestamp 'yesterday'"),
        (f"t={NOW},v1=caf\u00e9", "verification_error: "),
    ],
)
def test_failure_reasons(header: Any, reason: str) -> None:
    verified, got = verify_webhook_signature(BODY, header, SECRET, now_s=NOW)
    assert not verified
    assert got.startswith(reason) if reason.endswith(": ") else got == reason


def test_valid_within_tolerance_either_side() -> None:
    for skew in (-300, 0, 300):
        header = sign_webhook(BODY, SECRET, timestamp=NOW + skew)
        assert verify_webhook_signature(BODY, header, SECRET, now_s=NOW) == (True, "valid")
    header = sign_webhook(BODY, SECRET, timestamp=NOW - 20)
    assert verify_webhook_signature(BODY, header, SECRET, tolerance=10, now_s=NOW) == (
        False,
        "timestamp_expired (diff=20s, tolerance=10s)",
    )


def test_any_change_breaks_the_signature() -> None:
    header = sign_webhook(BODY, SECRET, timestamp=NOW)
    assert verify_webhook_signature(BODY + b" ", header, SECRET, now_s=NOW) == (
        False,
        "signature_mismatch",
    )
    assert verify_webhook_signature(BODY, header, OLD_SECRET, now_s=NOW) == (
        False,
        "signature_mismatch",
    )
    forged_time = header.replace(f"t={NOW}", f"t={NOW + 1}")
    assert verify_webhook_signature(BODY, forged_time, SECRET, now_s=NOW) == (
        False,
        "signature_mismatch",
    )


def test_str_payload_and_spaces_and_several_v1_entries() -> None:
    good = sign_webhook(BODY, SECRET, timestamp=NOW).split(",")[1]
    header = f"t={NOW}, v1={'0' * 64}, {good}"
    assert verify_webhook_signature(BODY.decode(), header, SECRET, now_s=NOW) == (True, "valid")


def test_strict_raises_with_the_reason() -> None:
    verify_webhook_signature_strict(BODY, sign_webhook(BODY, SECRET), SECRET)
    with pytest.raises(WebhookVerificationError) as info:
        verify_webhook_signature_strict(BODY, "", SECRET)
    assert str(info.value) == "Webhook signature verification failed: no_signature_header"
    assert info.value.reason == "no_signature_header"
    assert isinstance(info.value, EZThrottleError)


def test_rotation_primary_then_secondary() -> None:
    new_header = sign_webhook(BODY, SECRET)
    old_header = sign_webhook(BODY, OLD_SECRET)
    assert try_verify_with_secrets(BODY, new_header, SECRET, OLD_SECRET) == (True, "valid_primary")
    assert try_verify_with_secrets(BODY, old_header, SECRET, OLD_SECRET) == (
        True,
        "valid_secondary",
    )
    assert try_verify_with_secrets(BODY, old_header, SECRET) == (
        False,
        "both_secrets_failed (primary: signature_mismatch)",
    )
    other = sign_webhook(BODY, "some_third_secret_value")
    assert try_verify_with_secrets(BODY, other, SECRET, OLD_SECRET) == (
        False,
        "both_secrets_failed (primary: signature_mismatch)",
    )
    assert try_verify_with_secrets(BODY, "", SECRET, OLD_SECRET) == (
        False,
        "both_secrets_failed (primary: no_signature_header)",
    )


def test_old_import_path_still_works() -> None:
    assert webhook_utils.verify_webhook_signature is verify_webhook_signature
    assert webhook_utils.WebhookVerificationError is WebhookVerificationError


# -- agreement with the published SDK -------------------------------------------------


def _cases(now: int) -> list[dict[str, Any]]:
    body = BODY.decode()
    good = sign_webhook(BODY, SECRET, timestamp=now)
    return [
        {"payload": body, "header": good, "secret": SECRET, "tolerance": 300},
        {
            "payload": body,
            "header": sign_webhook(BODY, SECRET, timestamp=now - 100),
            "secret": SECRET,
            "tolerance": 300,
        },
        {"payload": body + "x", "header": good, "secret": SECRET, "tolerance": 300},
        {"payload": body, "header": good, "secret": OLD_SECRET, "tolerance": 300},
        {"payload": body, "header": "", "secret": SECRET, "tolerance": 300},
        {"payload": body, "header": f"t={now}", "secret": SECRET, "tolerance": 300},
        {"payload": body, "header": f"t={now - 5000},v1=ab", "secret": SECRET, "tolerance": 300},
        {
            "payload": body,
            "header": sign_webhook(BODY, SECRET, timestamp=now - 50),
            "secret": SECRET,
            "tolerance": 10,
        },
    ]


def _same(ours: list[Any], theirs: list[Any]) -> bool:
    """Equal, allowing the expiry's diff to differ by the second that may tick between runs."""
    if ours[0] != theirs[0]:
        return False
    pattern = r"timestamp_expired \(diff=(\d+)s, tolerance=(\d+)s\)"
    a, b = re.fullmatch(pattern, ours[1]), re.fullmatch(pattern, theirs[1])
    if a and b:
        return abs(int(a[1]) - int(b[1])) <= 2 and a[2] == b[2]
    return ours[1] == theirs[1]


def test_published_sdk_verifies_our_signatures_with_the_same_reasons(published: Any) -> None:
    cases = _cases(int(time.time()))
    theirs = published.run({"mode": "verify", "data": cases})
    ours = [list(verify_webhook_signature(c["payload"].encode(), c["header"], c["secret"], c["tolerance"])) for c in cases]
    assert theirs[0] == [True, "valid"] and theirs[1] == [True, "valid"]
    assert all(_same(o, t) for o, t in zip(ours, theirs)), (ours, theirs)


def test_we_verify_signatures_computed_outside_the_sdk(published: Any) -> None:
    now = int(time.time())
    signing = [
        {"payload": BODY.decode(), "secret": SECRET, "timestamp": now},
        {"payload": "", "secret": OLD_SECRET, "timestamp": now - 10},
    ]
    headers = published.run({"mode": "sign", "data": signing})
    assert headers[0] == sign_webhook(BODY, SECRET, timestamp=now)
    assert verify_webhook_signature(BODY, headers[0], SECRET) == (True, "valid")
    assert verify_webhook_signature(b"", headers[1], OLD_SECRET) == (True, "valid")


def test_rotation_agrees_with_published(published: Any) -> None:
    body = BODY.decode()
    cases = [
        {
            "payload": body,
            "header": sign_webhook(BODY, SECRET),
            "primary": SECRET,
            "secondary": OLD_SECRET,
        },
        {
            "payload": body,
            "header": sign_webhook(BODY, OLD_SECRET),
            "primary": SECRET,
            "secondary": OLD_SECRET,
        },
        {
            "payload": body,
            "header": sign_webhook(BODY, OLD_SECRET),
            "primary": SECRET,
            "secondary": None,
        },
    ]
    theirs = published.run({"mode": "try_secrets", "data": cases})
    ours = [list(try_verify_with_secrets(BODY, c["header"], c["primary"], c["secondary"])) for c in cases]
    assert (
        ours
        == theirs
        == [
            [True, "valid_primary"],
            [True, "valid_secondary"],
            [False, "both_secrets_failed (primary: signature_mismatch)"],
        ]
    )
