"""Who is signed in to the console, and the protections around it.

- The API key (a customer) or ``EZT_OPERATOR_TOKEN`` (the operator) is kept
  in one cookie, :data:`COOKIE`: ``HttpOnly`` (no script reads it),
  ``SameSite=Strict`` (no other site's page sends it), ``Secure`` when the
  console is served over https (directly, or behind a trusted proxy saying
  ``X-Forwarded-Proto: https``), ``Path=/console``. Every request checks it
  again: a revoked key signs its holder out within ``api_key_cache_s``.
- Sign-in failures count toward the API's failed-login limit
  (:class:`~..auth.Authenticator`): the same window, per client address, and
  429 once over it.
- Every state-changing form carries a CSRF token: an HMAC of a fixed label
  keyed by the signed-in secret, so it is per session, needs no server
  state, and is the same on every edge; a POST without the right one is a 403.
- Every console response has a strict Content-Security-Policy (scripts and
  styles from this origin only: no inline script, no inline style), no
  framing, no referrer and no caching.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass

from aiohttp import web

from ...common.errors import ApiError
from ..context import CTX

COOKIE = "ezt_console"
PATH = "/console"
CSRF_FIELD = "csrf"
_CSRF_LABEL = b"ezthrottle console csrf v1"
MAX_SECRET_CHARS = 512

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Viewer:
    """The signed-in party: a customer, or the operator (``customer`` None)."""

    secret: str
    customer: str | None

    @property
    def operator(self) -> bool:
        return self.customer is None

    @property
    def csrf(self) -> str:
        return hmac.new(self.secret.encode(), _CSRF_LABEL, hashlib.sha256).hexdigest()

    def check_csrf(self, given: object) -> None:
        if not isinstance(given, str) or not hmac.compare_digest(given.encode(), self.csrf.encode()):
            raise ApiError("forbidden", "missing or wrong CSRF token: reload the page and try again")


async def identify(request: web.Request, secret: str) -> Viewer:
    """The viewer a secret signs in: the operator token first, then an API key. 401/429 as the API."""
    ctx = request.app[CTX]
    secret = secret.strip()
    if not secret or len(secret) > MAX_SECRET_CHARS or not secret.isprintable():
        raise ApiError("unauthorized", "enter an API key or the operator token")
    operator_token = ctx.settings.operator_token
    if operator_token and len(secret) == len(operator_token) and hmac.compare_digest(secret.encode(), operator_token.encode()):
        return Viewer(secret, None)
    return Viewer(secret, await ctx.auth.customer_of_key(request, secret))


async def viewer(request: web.Request) -> Viewer | None:
    """The viewer of the session cookie, or None (no cookie, or it no longer signs anyone in)."""
    secret = request.cookies.get(COOKIE)
    if not secret:
        return None
    try:
        return await identify(request, secret)
    except ApiError as exc:
        if exc.code == "rate_limited":
            raise
        return None


def _secure(request: web.Request) -> bool:
    """Served over https: directly, or a trusted proxy says so."""
    if request.secure:
        return True
    try:
        peer = ipaddress.ip_address((request.remote or "").strip("[]"))
    except ValueError:
        return False
    if any(peer in net for net in request.app[CTX].auth.trusted_proxies):
        return request.headers.get("X-Forwarded-Proto", "").lower() == "https"
    return False


def sign_in(request: web.Request, response: web.StreamResponse, who: Viewer) -> None:
    response.set_cookie(COOKIE, who.secret, path=PATH, httponly=True, samesite="Strict", secure=_secure(request))


def sign_out(request: web.Request, response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path=PATH)


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the console's headers on everything under /console."""
    if request.path == PATH or request.path.startswith(PATH + "/"):
        for name, value in SECURITY_HEADERS.items():
            if name == "Cache-Control" and request.path.startswith(PATH + "/static/"):
                continue
            response.headers[name] = value


PRE_COOKIE = "ezt_console_pre"


def sign_in_token(request: web.Request) -> str:
    """The sign-in form's CSRF token: a random value, also kept in a SameSite=Strict cookie (double
    submit, :func:`keep_sign_in_token`), so another site cannot sign a visitor in to an account it chose."""
    return request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(24)


def keep_sign_in_token(request: web.Request, response: web.StreamResponse, token: str) -> None:
    response.set_cookie(PRE_COOKIE, token, path=PATH, httponly=True, samesite="Strict", secure=_secure(request))


def check_sign_in_token(request: web.Request, given: object) -> None:
    expected = request.cookies.get(PRE_COOKIE, "")
    if not expected or not isinstance(given, str) or not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError("forbidden", "missing or wrong CSRF token: reload the sign-in page and try again")
