"""Webhook secrets: ``POST/GET/DELETE /api/v1/webhook-secrets``.

A customer's webhooks are signed with its primary secret (see
``common/webhook_signing.py``); the secondary one only helps receivers during a
rotation. Secrets are at least 16 characters. HMAC needs them whole, so
they are kept in ``keys.webhook_secrets(customer)`` sealed with
``EZT_SECRETS_KEYS`` when it is set (AES-256-GCM, ``common/secretbox.py``), as
given otherwise. They never leave the server whole: reads show the first 4
and last 3 characters (``your_secret_min_16_chars`` -> ``your****ars``), and
nothing logs them. A stored secret this node cannot open (sealed with a key
its ``EZT_SECRETS_KEYS`` lacks) answers 503 ``secrets_unavailable``. A change
signs the webhooks of the process that made it at once, and every other
process's within a second (each keeps what it read for that long:
``common/webhooks.py``); a customer's first secrets sign at once everywhere.

- POST ``{"primary_secret": str, "secondary_secret"?: str | null}`` sets both
  (a POST without a secondary removes the old one) -> 200 with the masked view.
- GET -> ``{"customer_id", "primary_secret", "secondary_secret", "has_secondary"}``
  masked; 404 when none is set.
- DELETE -> ``{"status": "ok", "message": "Webhook secrets deleted"}``; also
  when none was set, so a repeated DELETE succeeds.
- POST ``/api/v1/webhook-secrets/rotate`` ``{"new_secret": str}``: the new
  secret becomes primary and the current primary secondary, in one step, so
  receivers verifying with either keep working during a rotation (the SDK's
  ``rotate_webhook_secret``; a client cannot do it alone, reads are masked).
  With no secret set, the new one is the only one. -> 200 with the masked view.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from ..common import hashes, keys
from ..common.errors import ApiError
from ..common.http import json_response, read_json
from ..common.secretbox import SecretBox, SecretBoxError, open_webhook_secrets, seal_webhook_secrets
from ..common.webhooks import forget_secrets
from .context import CTX

log = logging.getLogger(__name__)

MIN_SECRET_CHARS = 16
MAX_SECRET_CHARS = 1024
_FIELDS = ("primary_secret", "secondary_secret")


def mask(secret: str) -> str:
    """The SDK README's shape (``your****ars``), but never more than 4 characters: the first and last 2."""
    return f"{secret[:2]}****{secret[-2:]}"


def _check_secret(body: dict[str, Any], name: str, *, required: bool) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise ApiError("missing_field", f"{name}: is required", field=name)
        return None
    if not isinstance(value, str):
        raise ApiError("invalid_field", f"{name}: must be a string", field=name)
    if len(value) < MIN_SECRET_CHARS:
        raise ApiError("invalid_field", f"{name}: must be at least {MIN_SECRET_CHARS} characters", field=name)
    if len(value) > MAX_SECRET_CHARS:
        raise ApiError("invalid_field", f"{name}: must be at most {MAX_SECRET_CHARS} characters", field=name)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ApiError("invalid_field", f"{name}: must not contain control characters", field=name)
    return value


def _view(customer: str, primary: str, secondary: str | None) -> dict[str, Any]:
    return {
        "customer_id": customer,
        "primary_secret": mask(primary),
        "secondary_secret": mask(secondary) if secondary else None,
        "has_secondary": bool(secondary),
    }


async def _read_body(request: web.Request, allowed: tuple[str, ...], expected: str) -> dict[str, Any]:
    """The JSON object of the request, with no field outside ``allowed`` (400 naming it)."""
    body = await read_json(request, request.app[CTX].settings.max_body_bytes)
    if not isinstance(body, dict):
        raise ApiError("invalid_request", f"body must be a JSON object with {expected}")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ApiError("unknown_field", f"{unknown[0]}: unknown field; allowed: {', '.join(allowed)}", field=unknown[0])
    return body


async def set_secrets(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    customer = await ctx.auth.customer(request)
    body = await _read_body(request, _FIELDS, "primary_secret (and optionally secondary_secret)")
    primary = _check_secret(body, "primary_secret", required=True)
    secondary = _check_secret(body, "secondary_secret", required=False)
    assert primary is not None
    fields = seal_webhook_secrets(SecretBox(ctx.settings.secrets_keys), customer, primary, secondary)
    await hashes.replace(ctx.scripts.replace_hash, keys.webhook_secrets(customer), fields)  # old secondary gone in the same step
    forget_secrets(customer)
    log.info("webhook secrets set (secondary: %s)", "yes" if secondary else "no", extra={"customer": customer})
    return json_response({"status": "ok", "message": "Webhook secrets saved", **_view(customer, primary, secondary)})


async def _stored(ctx: Any, customer: str) -> tuple[str | None, tuple[str, str | None] | None]:
    """The stored primary value (as kept) and the opened (primary, secondary), or None."""
    primary, secondary = await ctx.redis.hmget(keys.webhook_secrets(customer), ["primary", "secondary"])
    try:
        return primary, open_webhook_secrets(SecretBox(ctx.settings.secrets_keys), customer, primary, secondary)
    except SecretBoxError as exc:
        log.error("webhook secrets unreadable: %s", exc, extra={"customer": customer})
        raise ApiError("secrets_unavailable", f"the stored webhook secrets cannot be read on this node: {exc}") from None


async def get_secrets(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    customer = await ctx.auth.customer(request)
    _primary, opened = await _stored(ctx, customer)
    if opened is None:
        raise ApiError("not_found", "no webhook secrets configured; POST /api/v1/webhook-secrets first")
    return json_response(_view(customer, *opened))


async def rotate_secrets(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    customer = await ctx.auth.customer(request)
    body = await _read_body(request, ("new_secret",), "new_secret")
    new = _check_secret(body, "new_secret", required=True)
    assert new is not None
    for _try in range(3):  # another rotation or set between the read and the write: read again
        stored_primary, opened = await _stored(ctx, customer)
        old = opened[0] if opened else None
        if old == new:
            raise ApiError("invalid_field", "new_secret: is already the primary secret", field="new_secret")
        fields = seal_webhook_secrets(SecretBox(ctx.settings.secrets_keys), customer, new, old)
        key = keys.webhook_secrets(customer)
        if await hashes.replace(ctx.scripts.replace_hash, key, fields, unless_changed=("primary", stored_primary)):
            forget_secrets(customer)
            log.info("webhook secret rotated (secondary: %s)", "previous primary" if old else "none", extra={"customer": customer})
            return json_response({"status": "ok", "message": "Webhook secret rotated", **_view(customer, new, old)})
    raise ApiError("conflict", "the webhook secrets changed while rotating three times in a row; try again")


async def delete_secrets(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    customer = await ctx.auth.customer(request)
    deleted = await ctx.redis.delete(keys.webhook_secrets(customer))
    forget_secrets(customer)
    if deleted:
        log.info("webhook secrets deleted", extra={"customer": customer})
    return json_response({"status": "ok", "message": "Webhook secrets deleted"})


ROUTES = [
    web.post("/api/v1/webhook-secrets", set_secrets),
    web.get("/api/v1/webhook-secrets", get_secrets),
    web.delete("/api/v1/webhook-secrets", delete_secrets),
    web.post("/api/v1/webhook-secrets/rotate", rotate_secrets),
]
