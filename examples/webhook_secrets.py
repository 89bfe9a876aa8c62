#!/usr/bin/env python3
"""README "Webhook Security": create, rotate, get and delete webhook secrets.

Step 2 of the rotation verifies a real webhook, in a Flask view as the README
writes it.
"""

from _support import API_KEY, EZTHROTTLE_URL, serve_wsgi, target, wait_webhooks_delivered
from flask import Flask, request

from ezthrottle import EZThrottle, NotFoundError, Step

client = EZThrottle(api_key=API_KEY, base_url=EZTHROTTLE_URL)

# Quick Start, 1. Create a webhook secret
# Create secret (min 16 characters)
client.create_webhook_secret(
    primary_secret="your_secure_random_secret_min_16_chars"
)
assert client.get_webhook_secret()["primary_secret"] == "yo****rs"

# Secret Rotation
# Step 1: Add new secret as primary, keep old as secondary
client.create_webhook_secret(
    primary_secret="new_secret_after_rotation_min_16",
    secondary_secret="old_secret_before_rotation_min_16"
)

# Step 2: Update webhook handlers to verify with both secrets
from ezthrottle import try_verify_with_secrets  # noqa: E402 (as in the README)

app = Flask(__name__)
reasons = []  # (not in the README) for the check below


@app.post("/webhook")
def webhook():
    verified, reason = try_verify_with_secrets(
        payload=request.get_data(),
        signature_header=request.headers.get('X-EZThrottle-Signature', ''),
        primary_secret="new_secret_after_rotation_min_16",
        secondary_secret="old_secret_before_rotation_min_16"
    )
    if not verified:
        return {'error': f'Invalid signature: {reason}'}, 401

    print(f"Verified with: {reason}")  # "valid_primary" or "valid_secondary"
    reasons.append(reason)
    return {'ok': True}


APP_URL, stop_app = serve_wsgi(app)
job = Step(client).url(target("api.example.com")).webhooks([{"url": f"{APP_URL}/webhook"}]).execute()
wait_webhooks_delivered(client, job["job_id"])  # delivered = answered 200 = verified
assert reasons == ["valid_primary"], reasons
stop_app()

# Step 3: After verifying all webhooks work with new secret,
# remove secondary secret
client.create_webhook_secret("new_secret_after_rotation_min_16")
assert client.get_webhook_secret()["has_secondary"] is False

# Or use the convenience method:
# Automatically rotates: new → primary, old → secondary
client.rotate_webhook_secret("new_secret_min_16_chars")
# (not in the README) the server swapped them in one step: the old primary stays valid
rotated = client.get_webhook_secret()
assert (rotated["primary_secret"], rotated["secondary_secret"]) == ("ne****rs", "ne****16"), rotated

# Manage Secrets
# Create or update secrets
client.create_webhook_secret(
    primary_secret="your_secret_min_16_chars",
    secondary_secret="optional_backup_min_16_chars"  # For rotation
)

# Get secrets (masked for security)
secrets = client.get_webhook_secret()
print(secrets)
# {
#   "customer_id": "cust_XXX",
#   "primary_secret": "yo****rs",
#   "secondary_secret": "op****rs",
#   "has_secondary": True
# }
assert secrets["primary_secret"] == "yo****rs" and secrets["secondary_secret"] == "op****rs"
assert secrets["has_secondary"] is True and secrets["customer_id"]

# Delete secrets
print(client.delete_webhook_secret())
try:
    client.get_webhook_secret()
    raise AssertionError("the secrets are still there")
except NotFoundError as gone:
    print("after delete:", gone)
