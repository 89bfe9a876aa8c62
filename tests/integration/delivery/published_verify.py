"""Check real deliveries with the published ``ezthrottle==1.3.0`` verify functions.

Runs inside that package's own virtualenv (see ``conftest.published``). Reads
a JSON list of cases on stdin, prints one answer per case:

- ``{"fn": "verify", "payload", "header", "secret", "tolerance"?, "now"?}`` -> ``[bool, reason]``
- ``{"fn": "strict", ...same}`` -> ``["ok"]`` or ``["raised", type name, message]``
- ``{"fn": "try", "payload", "header", "primary", "secondary", "now"?}`` -> ``[bool, reason]``

``now`` (unix seconds) stands in for the clock, to check expiry without waiting.
"""

import json
import sys
from unittest import mock

from ezthrottle import (
    WebhookVerificationError,
    try_verify_with_secrets,
    verify_webhook_signature,
    verify_webhook_signature_strict,
)


def run(case):
    payload = case["payload"].encode("utf-8")
    if case["fn"] == "verify":
        return list(verify_webhook_signature(payload, case["header"], case["secret"], case.get("tolerance", 300)))
    if case["fn"] == "strict":
        try:
            verify_webhook_signature_strict(payload, case["header"], case["secret"], case.get("tolerance", 300))
        except WebhookVerificationError as exc:
            return ["raised", type(exc).__name__, str(exc)]
        return ["ok"]
    if case["fn"] == "try":
        return list(try_verify_with_secrets(payload, case["header"], case["primary"], case.get("secondary")))
    raise ValueError(case["fn"])


def main():
    answers = []
    for case in json.load(sys.stdin):
        if case.get("now") is not None:
            with mock.patch("time.time", return_value=float(case["now"])):
                answers.append(run(case))
        else:
            answers.append(run(case))
    json.dump(answers, sys.stdout)


if __name__ == "__main__":
    main()
