"""Signature headers, checked against independent computations and the standardwebhooks library."""

import base64
import hashlib
import hmac

from standardwebhooks.webhooks import Webhook

from ezthrottle_server.common.webhook_signing import (
    WebhookSecrets,
    ezthrottle_signature,
    signed_headers,
    standard_key,
)

BODY = b'{"job_id":"job_1","status":"success","note":"caf\xc3\xa9"}'
SECRET = "your_secret_min_16_chars"


def test_ezthrottle_signature_is_hex_hmac_of_t_dot_body():
    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert ezthrottle_signature(BODY, SECRET, 1700000000) == f"t=1700000000,v1={expected}"


def test_headers_without_secret_are_unsigned():
    assert signed_headers(BODY, "msg_1", 1700000000, None) == {"webhook-id": "msg_1", "webhook-timestamp": "1700000000"}


def test_standard_signature_one_per_secret_and_the_library_accepts_it():
    import time

    t = int(time.time())
    headers = signed_headers(BODY, "msg_1", t, WebhookSecrets(SECRET, "older_secret_min_16_chars"))
    assert headers["X-EZThrottle-Signature"] == ezthrottle_signature(BODY, SECRET, t)
    sigs = headers["webhook-signature"].split(" ")
    assert len(sigs) == 2 and all(s.startswith("v1,") for s in sigs)
    mac = hmac.new(SECRET.encode(), f"msg_1.{t}.".encode() + BODY, hashlib.sha256).digest()
    assert sigs[0] == "v1," + base64.b64encode(mac).decode()
    for secret in (SECRET, "older_secret_min_16_chars"):
        Webhook("whsec_" + base64.b64encode(secret.encode()).decode()).verify(BODY, headers)


def test_whsec_secrets_key_the_standard_signature_with_their_decoded_bytes():
    raw = bytes(range(24))
    whsec = "whsec_" + base64.b64encode(raw).decode()
    assert standard_key(whsec) == raw
    assert standard_key(SECRET) == SECRET.encode()
    assert standard_key("whsec_!!!!not base64!!!!") == b"whsec_!!!!not base64!!!!"


def test_secrets_never_show_in_repr():
    text = repr(WebhookSecrets(SECRET, "older_secret_min_16_chars")) + str(WebhookSecrets(SECRET))
    assert SECRET not in text and "older" not in text
