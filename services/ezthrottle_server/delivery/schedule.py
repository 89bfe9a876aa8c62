"""When to retry a webhook: moved to ``common/webhook_schedule.py`` (the edge decides first attempts too); kept for imports."""

from ..common.webhook_schedule import RETRY, Decision, backoff_s, decide

__all__ = ["RETRY", "Decision", "backoff_s", "decide"]
