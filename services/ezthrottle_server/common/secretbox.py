"""Webhook signing secrets sealed at rest (AES-256-GCM, ``cryptography``).

HMAC needs the secret itself, so it cannot be hashed like an API key. With
``EZT_SECRETS_KEYS`` set, what Redis holds (and its RDB/AOF files, backups
and replicas) is the secret sealed with a key that lives only in the
services' environment::

    EZT_SECRETS_KEYS="k2:<base64 of 32 random bytes>,k1:<older key>"

The first key seals; every key listed opens, so a key is rotated by putting
the new one first, running ``ezthrottle-admin secrets reseal`` (which seals
every stored secret with the first key), then dropping the old one. A sealed
value reads ``ezt1:<key id>:<base64url(nonce | ciphertext | tag)>``, and is
bound to where it is kept (the customer and the field, as associated data),
so a sealed value copied to another customer does not open.

Without keys, secrets are stored as given (the behaviour before this
module; the production profile starts without keys only when
``EZT_INSECURE_PLAINTEXT_SECRETS=1`` says so). Once keys are set, a value
stored unsealed is refused when read, as one sealed with a key not listed is
(``SecretBoxError``, counted in ``ezt_secrets_refused_total``): otherwise
whoever can write to Redis could plant a secret of their choosing, a
downgrade. ``ezthrottle-admin secrets reseal`` seals such values.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import EZThrottleServerError
from .metrics import SECRETS_REFUSED

SEALED_PREFIX = "ezt1:"
NONCE_BYTES = 12
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class SecretBoxError(EZThrottleServerError, ValueError):
    """A sealed value that cannot be opened here (unknown key, or altered)."""


def parse_keys(text: str, setting: str = "EZT_SECRETS_KEYS") -> tuple[tuple[str, bytes], ...]:
    """``id:base64key, …`` → ((id, key), …); raises ValueError naming the setting and the entry."""
    out: list[tuple[str, bytes]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        kid, sep, encoded = item.partition(":")
        if not sep or not _KEY_ID.match(kid):
            raise ValueError(f"{setting}: {kid!r} is not '<key id>:<base64 key>' (ids: letters, digits, _ and -, at most 32)")
        try:
            standard = encoded.strip().rstrip("=").replace("-", "+").replace("_", "/")  # either alphabet
            key = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{setting}: key {kid!r} is not base64") from None
        if len(key) != 32:
            raise ValueError(f"{setting}: key {kid!r} must be 32 bytes (base64 of 32 random bytes), got {len(key)}")
        if any(kid == k for k, _ in out):
            raise ValueError(f"{setting}: key id {kid!r} is listed twice")
        out.append((kid, key))
    return tuple(out)


def new_key() -> str:
    """A fresh key, as EZT_SECRETS_KEYS wants it after ``<id>:``."""
    return base64.b64encode(os.urandom(32)).decode()


def is_sealed(stored: str) -> bool:
    return stored.startswith(SEALED_PREFIX)


class SecretBox:
    """Seals with the first key, opens with any (see the module doc)."""

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        self._keys = {kid: AESGCM(key) for kid, key in keys}
        self.current = keys[0][0] if keys else None

    @property
    def enabled(self) -> bool:
        return self.current is not None

    def seal(self, plaintext: str, context: str) -> str:
        """What to store for ``plaintext`` kept at ``context`` (as given when no keys are set)."""
        if self.current is None:
            return plaintext
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keys[self.current].encrypt(nonce, plaintext.encode(), context.encode())
        return f"{SEALED_PREFIX}{self.current}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, stored: str, context: str, *, allow_unsealed: bool = False) -> str:
        """The secret behind a stored value.

        A value stored unsealed is returned as it is while no key is set; with
        keys it is refused, unless ``allow_unsealed`` (``secrets reseal``, sealing it).
        """
        if not is_sealed(stored):
            if self.current is None or allow_unsealed:
                return stored
            SECRETS_REFUSED.labels("unsealed").inc()
            raise SecretBoxError("stored unsealed while EZT_SECRETS_KEYS is set: refused; `ezthrottle-admin secrets reseal` seals it")
        kid, _, payload = stored[len(SEALED_PREFIX) :].partition(":")
        aead = self._keys.get(kid)
        if aead is None:
            have = ", ".join(self._keys) or "none"
            SECRETS_REFUSED.labels("unknown_key").inc()
            raise SecretBoxError(f"sealed with key {kid!r}, which EZT_SECRETS_KEYS here does not have (it has: {have})")
        try:
            raw = base64.urlsafe_b64decode(payload)
            return aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode()).decode()
        except (binascii.Error, ValueError, InvalidTag):
            SECRETS_REFUSED.labels("altered").inc()
            raise SecretBoxError(f"sealed value under key {kid!r} does not open here (altered, or moved from another place)") from None

    def needs_reseal(self, stored: str) -> bool:
        """Stored unsealed while a key is set, or sealed with another key than the current one."""
        if self.current is None:
            return False
        return not stored.startswith(f"{SEALED_PREFIX}{self.current}:")


def webhook_secret_context(customer: str, field: str) -> str:
    """The associated data of a customer's webhook secret (``primary`` or ``secondary``)."""
    return f"webhook-secret|{customer}|{field}"


def seal_webhook_secrets(box: SecretBox, customer: str, primary: str, secondary: str | None) -> list[str]:
    """The field/value pairs to store for a customer's webhook secrets (HSET order)."""
    fields = ["primary", box.seal(primary, webhook_secret_context(customer, "primary"))]
    if secondary:
        fields += ["secondary", box.seal(secondary, webhook_secret_context(customer, "secondary"))]
    return fields


def open_webhook_secrets(box: SecretBox, customer: str, primary: str | None, secondary: str | None) -> tuple[str, str | None] | None:
    """A customer's (primary, secondary) from their stored values; None when none is set."""
    if not primary:
        return None
    return (
        box.open(primary, webhook_secret_context(customer, "primary")),
        box.open(secondary, webhook_secret_context(customer, "secondary")) if secondary else None,
    )
