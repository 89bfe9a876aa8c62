"""EZThrottle: the API dam for rate-limited services (Python client).

Submit HTTP requests as jobs that an EZThrottle server sends at the pace the
target tolerates, retries through outages and delivers to your webhooks::

    from ezthrottle import EZThrottle, Step

    with EZThrottle(api_key="...") as client:
        job = Step(client).url("https://api.example.com").execute()
"""

from ._version import __version__
from .client import AsyncEZThrottle, BaseClient, EZThrottle
from .exceptions import (
    AuthenticationError,
    ConnectionError,
    EZThrottleError,
    ForwardToEZThrottle,
    NotFoundError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    TimeoutError,
    ValidationError,
    WebhookVerificationError,
)
from .forwarding import auto_forward
from .step import IdempotentStrategy, Step, StepType
from .webhooks import (
    SIGNATURE_HEADER,
    sign_webhook,
    try_verify_with_secrets,
    verify_webhook_signature,
    verify_webhook_signature_strict,
)
from .workflow import StepRun, WebhookHandler, WebhookResult

__all__ = [
    # the names of the published 1.x SDK
    "EZThrottle",
    "auto_forward",
    "EZThrottleError",
    "TimeoutError",
    "AuthenticationError",
    "ForwardToEZThrottle",
    "Step",
    "StepType",
    "IdempotentStrategy",
    "verify_webhook_signature",
    "verify_webhook_signature_strict",
    "try_verify_with_secrets",
    "WebhookVerificationError",
    "QuotaExceededError",
    # added here
    "AsyncEZThrottle",
    "BaseClient",
    "ConnectionError",
    "NotFoundError",
    "RateLimitError",
    "ServerError",
    "ValidationError",
    "SIGNATURE_HEADER",
    "sign_webhook",
    "WebhookHandler",
    "WebhookResult",
    "StepRun",
    "__version__",
]
