"""Signed deliveries, checked from outside: the published ezthrottle==1.3.0
verify functions (own virtualenv) and the standardwebhooks library."""

import base64
import secrets

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from integration.delivery.helpers import all_in, wait_webhooks
from support.jobs import auth, submit

pytestmark = pytest.mark.asyncio

OLD = "old_secret_before_rotation_min_16"
NEW = "new_secret_after_rotation_min_16"


async def set_secrets(http, edge, key, primary, secondary=None):
    body = {"primary_secret": primary, **({"secondary_secret": secondary} if secondary else {})}
    async with http.post(f"{edge.url}/api/v1/webhook-secrets", json=body, headers=auth(key)) as resp:
        assert resp.status == 200, await resp.text()


async def deliver_one(http, edge, key, target, receiver, path="/hook"):
    job = await submit(
        http, edge.url, key, {"url": f"{target.url}/status/200?n={secrets.token_hex(4)}", "webhooks": [{"url": f"{receiver.url}{path}"}]}
    )
    await wait_webhooks(http, edge.url, key, job["job_id"], all_in("delivered"))
    [req] = [r for r in receiver.requests if r.json()["job_id"] == job["job_id"]]
    return req


def standard_headers(req):
    return {k: req.headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}


async def test_published_sdk_verifies_and_rejects_with_the_readme_reasons(http, edge, delivery, api_key, target, receivers, published):
    r = await receivers()
    await set_secrets(http, edge, api_key, OLD)
    req = await deliver_one(http, edge, api_key, target, r)
    body, header = req.body.decode(), req.headers["X-EZThrottle-Signature"]
    t = int(header.split(",")[0].removeprefix("t="))
    tampered = body.replace('"status":"success"', '"status":"failed"')
    assert tampered != body

    cases = [
        {"fn": "verify", "payload": body, "header": header, "secret": OLD},
        {"fn": "strict", "payload": body, "header": header, "secret": OLD},
        {"fn": "verify", "payload": tampered, "header": header, "secret": OLD},
        {"fn": "verify", "payload": body, "header": header, "secret": "wrong_secret_but_16_chars_long"},
        {"fn": "verify", "payload": body, "header": header, "secret": OLD, "now": t + 350},
        {"fn": "strict", "payload": body, "header": header, "secret": OLD, "now": t + 350},
        {"fn": "strict", "payload": tampered, "header": header, "secret": OLD},
        {"fn": "verify", "payload": body, "header": "", "secret": OLD},
        {"fn": "verify", "payload": body, "header": f"t={t}", "secret": OLD},
    ]
    assert published.run(cases) == [
        [True, "valid"],
        ["ok"],
        [False, "signature_mismatch"],
        [False, "signature_mismatch"],
        [False, "timestamp_expired (diff=350s, tolerance=300s)"],
        ["raised", "WebhookVerificationError", "Webhook signature verification failed: timestamp_expired (diff=350s, tolerance=300s)"],
        ["raised", "WebhookVerificationError", "Webhook signature verification failed: signature_mismatch"],
        [False, "no_signature_header"],
        [False, "missing_v1_signature"],
    ]


async def test_rotation_verifies_with_both_secrets(http, edge, delivery, api_key, target, receivers, published):
    r = await receivers()
    await set_secrets(http, edge, api_key, OLD)
    before = await deliver_one(http, edge, api_key, target, r, "/before")
    await set_secrets(http, edge, api_key, NEW, OLD)  # rotate: new primary, old secondary
    after = await deliver_one(http, edge, api_key, target, r, "/after")

    def case(req, primary, secondary):
        return {
            "fn": "try",
            "payload": req.body.decode(),
            "header": req.headers["X-EZThrottle-Signature"],
            "primary": primary,
            "secondary": secondary,
        }

    assert published.run(
        [
            case(after, NEW, OLD),  # signed with the new primary
            case(before, NEW, OLD),  # sent before the rotation, still verifies
            case(after, OLD, NEW),
            case(after, OLD, None),
        ]
    ) == [
        [True, "valid_primary"],
        [True, "valid_secondary"],
        [True, "valid_secondary"],
        [False, "both_secrets_failed (primary: signature_mismatch)"],
    ]
    # Standard Webhooks: one signature per secret, so a receiver holding either verifies.
    assert len(after.headers["webhook-signature"].split(" ")) == 2
    for secret in (NEW, OLD):
        assert Webhook(secret.encode()).verify(after.body, standard_headers(after))["job_id"] == after.json()["job_id"]


async def test_standard_webhooks_library_verifies(http, edge, delivery, api_key, target, receivers):
    r = await receivers()
    await set_secrets(http, edge, api_key, OLD)
    req = await deliver_one(http, edge, api_key, target, r)
    headers = standard_headers(req)
    assert headers["webhook-timestamp"] == req.headers["X-EZThrottle-Signature"].split(",")[0].removeprefix("t=")
    assert headers["webhook-id"] == f"msg_{req.json()['job_id']}_0"
    # How receivers pass our secret to the library: "whsec_" + base64(secret), or its bytes.
    as_whsec = "whsec_" + base64.b64encode(OLD.encode()).decode()
    for wh in (Webhook(as_whsec), Webhook(OLD.encode())):
        assert wh.verify(req.body, headers) == req.json()
        with pytest.raises(WebhookVerificationError):
            wh.verify(req.body.replace(b'"success"', b'"failed"'), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(b"wrong_secret_but_16_chars_long").verify(req.body, headers)


async def test_a_whsec_secret_is_used_as_the_standard_means_it(http, edge, delivery, api_key, target, receivers, published):
    r = await receivers()
    whsec = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    await set_secrets(http, edge, api_key, whsec)
    req = await deliver_one(http, edge, api_key, target, r)
    assert Webhook(whsec).verify(req.body, standard_headers(req)) == req.json()  # passed unchanged
    header = req.headers["X-EZThrottle-Signature"]
    assert published.run([{"fn": "verify", "payload": req.body.decode(), "header": header, "secret": whsec}]) == [[True, "valid"]]


async def test_without_a_secret_deliveries_are_unsigned(http, edge, delivery, api_key, target, receivers, published):
    r = await receivers()
    await set_secrets(http, edge, api_key, OLD)
    async with http.delete(f"{edge.url}/api/v1/webhook-secrets", headers=auth(api_key)) as resp:
        assert resp.status == 200
    req = await deliver_one(http, edge, api_key, target, r)
    assert "X-EZThrottle-Signature" not in req.headers and "webhook-signature" not in req.headers
    assert req.headers["webhook-id"] and req.headers["webhook-timestamp"]
    assert published.run([{"fn": "verify", "payload": req.body.decode(), "header": "", "secret": OLD}]) == [[False, "no_signature_header"]]


async def test_each_customer_signs_with_its_own_secret(http, edge, delivery, api_key, other_api_key, target, receivers, published):
    r = await receivers()
    await set_secrets(http, edge, api_key, OLD)
    await set_secrets(http, edge, other_api_key, NEW)
    mine = await deliver_one(http, edge, api_key, target, r, "/acme")
    theirs = await deliver_one(http, edge, other_api_key, target, r, "/globex")
    cases = [
        {"fn": "verify", "payload": req.body.decode(), "header": req.headers["X-EZThrottle-Signature"], "secret": secret}
        for req, secret in ((mine, OLD), (theirs, NEW), (mine, NEW))
    ]
    assert published.run(cases) == [[True, "valid"], [True, "valid"], [False, "signature_mismatch"]]
