"""A finished job's webhooks: their payload, and one signed POST of one of them, recorded.

One implementation for both senders: the edge that finished the job sends
each webhook's first attempt (``edge/webhooks.py``), the delivery service the
rest, and the first attempts an edge left behind (``delivery/worker.py``).
Both build the same payload (:func:`build_payload`) and go through
:class:`WebhookPoster`: the destination host's pace (``webhook_pace.lua``),
the customer's secrets (sealed at rest: ``common/secretbox.py``), the
signature headers (``common/webhook_signing.py``), the POST under the
outbound policy with no redirects and a timeout (``common/webhook_sender.py``),
the decision (``common/webhook_schedule.py``) and ``delivery_record.lua``,
which counts the quorum, schedules a retry for the delivery service, or
dead-letters.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson

from . import delivery_scripts, keys, scripting
from .batching import Batcher
from .config import Settings
from .deliveries import DEAD, DELIVERED, route_for
from .delivery_scripts import Applied, Plan, PostRecord
from .metrics import (
    WEBHOOK_DEAD_LETTERS,
    WEBHOOK_DELIVERIES,
    WEBHOOK_PACED,
    WEBHOOK_POSTS,
    WEBHOOK_QUORUM_LATENCY,
    WEBHOOK_QUORUM_MISSED,
    labelled,
)
from .redisconn import Scripts
from .secretbox import SecretBox, SecretBoxError, open_webhook_secrets
from .urls import domain_of, host_of
from .webhook_schedule import decide
from .webhook_sender import SendResult, WebhookSender
from .webhook_signing import WebhookSecrets, message_id, signed_headers
from .workflows import frugal_step

if TYPE_CHECKING:
    from .redisconn import RedisClient

log = logging.getLogger(__name__)

FINAL_JOB_STATES = ("success", "failed", "cancelled", "expired")
ANSWER_FIELDS = ("state", "result", "winner", "error", "finished_ms")  # what a step's webhooks take from the job that answered


def now_ms() -> int:
    return int(time.time() * 1000)


# -- the payload ----------------------------------------------------------------------


def build_payload(job_id: str, job: dict[str, str], spec: dict[str, Any], attempts: int, answered_by: str | None = None) -> bytes:
    """The webhook body: the SDK README's payload, plus region, attempts and error."""
    result = orjson.loads(job["result"]) if job.get("result") else None
    return orjson.dumps(
        {
            "job_id": job_id,
            "idempotent_key": job.get("idempotent_key"),
            "status": job["state"],
            "response": result or {"status_code": None, "headers": {}, "body": ""},
            "metadata": spec.get("metadata") or {},
            "region": job.get("winner") or None,
            "attempts": attempts,
            "error": job.get("error") or None,
            **_workflow(job_id, job, spec, result, answered_by or job_id),
        }
    )


def with_answer(step: dict[str, str], answer: dict[str, str]) -> dict[str, str]:
    """A step's record with the final state of the fallback that answered for it (nothing if either is gone)."""
    if not step or not answer:
        return {}
    return {**step, **{k: answer[k] for k in ANSWER_FIELDS if k in answer}}


def _workflow(job_id: str, job: dict[str, str], spec: dict[str, Any], result: dict[str, Any] | None, answered_by: str) -> dict[str, Any]:
    """The workflow section: links, which job of the step's fallback chain answered (``answered_by``: the
    step itself, or the fallback that ended it), and the FRUGAL continuation the client runs (see common/workflows.py)."""
    if job.get("chain") != "1" and not job.get("parent"):
        return {}
    status_code = (result or {}).get("status_code")
    step = frugal_step(job_id, spec, job["state"], status_code, job.get("error") or None)
    return {
        "workflow": {
            "root_job_id": job.get("root") or job_id,
            "job_id": job_id,
            "parent_job_id": job.get("parent") or None,
            "relation": job.get("relation") or None,
            "answered_by": answered_by,
            "frugal_steps": [step] if step else [],
        }
    }


def _none() -> asyncio.Future[None]:
    """A future already answered None: gathered with the batch's futures, it costs no task of its own."""
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    fut.set_result(None)
    return fut


async def read_final_job(batch: Batcher, job_id: str, answered_by: str) -> tuple[dict[str, str], int]:
    """``job_id``'s record with the final state of ``answered_by`` (itself, or the fallback that ended its step),
    and the number of attempts of ``answered_by``: what :func:`build_payload` takes. ``{}`` if either is gone."""
    step, answer, attempts = await asyncio.gather(
        batch.execute("HGETALL", keys.job(job_id)),
        batch.execute("HGETALL", keys.job(answered_by)) if answered_by != job_id else _none(),
        batch.execute("LLEN", keys.attempts(answered_by)),
    )
    return (step if answer is None else with_answer(step, answer)), int(attempts or 0)


def handoff_parts(member: str) -> tuple[str, str]:
    """A hand-off member of finish.lua, ``"<job>"`` or ``"<step>|<job that answered>"``: (webhooks' job, answered by)."""
    job_id, _, answered_by = member.partition("|")
    return job_id, answered_by or job_id


# -- one POST ----------------------------------------------------------------------


@dataclass(slots=True)
class HookState:
    """One webhook as its hash holds it (``common/deliveries.py``), what a POST of it needs."""

    job_id: str
    hook: int
    customer: str
    payload: str
    url: str
    attempts: int  # POSTs made before this one
    since_ms: int | None
    regions: str  # comma list
    window_base: int


@dataclass(slots=True)
class SendEntry:
    """Where a POST came from: a send stream's entry (acknowledged with the record), or none (``entry_id=""``:
    the edge's first attempt; ``edge=True`` then, so a send held back is no longer the edge's)."""

    stream: str
    entry_id: str
    group: str
    edge: bool = False


@dataclass(slots=True)
class Unclaimed:
    """The edge's first POST of a job's only webhook, made before the job's hand-off is claimed (edge/webhooks.py):
    the POST's record writes ``plan`` in its step (delivery_record.lua), unless the delivery service swept the
    hand-off meanwhile."""

    plan: Plan
    claim: Callable[[], Awaitable[int]]  # claims the hand-off now instead (delivery_claim.lua): a POST its host's pace puts back
    hold: Callable[[], None]  # keeps the hand-off from the sweep for one POST more: a slow POST, due at ``hold_at_ms``
    hold_at_ms: int


# -- a customer's signing secrets, as this process last read them ----------------------------------

SECRETS_FRESH_S = 1.0  # a customer's secrets are read again after this; this process's own writes forget them at once
SECRETS_KEPT = 10_000  # customers whose secrets a process keeps at most (the longest kept go first)
_secrets: dict[str, tuple[float, WebhookSecrets]] = {}  # customer -> (read until, opened)


def forget_secrets(customer: str) -> None:
    """The customer's secrets changed (the secrets API of this process): the next webhook reads them again."""
    _secrets.pop(customer, None)


def _fresh_secrets(customer: str) -> WebhookSecrets | None:
    known = _secrets.get(customer)
    if known is None or known[0] <= time.monotonic():
        return None
    return known[1]


def _keep_secrets(customer: str, secrets: WebhookSecrets) -> None:
    _secrets.pop(customer, None)
    while len(_secrets) >= SECRETS_KEPT:
        del _secrets[next(iter(_secrets))]
    _secrets[customer] = (time.monotonic() + SECRETS_FRESH_S, secrets)


class WebhookPoster:
    """Signed webhook POSTs of one process, at most ``delivery_concurrency`` at once, each recorded."""

    def __init__(
        self,
        settings: Settings,
        redis: RedisClient,
        scripts: Scripts,
        batch: Batcher,
        sender: WebhookSender,
        *,
        node: str,
        log_region: str,
        by: str,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.scripts = scripts
        self.batch = batch
        self.sender = sender
        self.node = node
        self.region = settings.region
        self.log_region = log_region
        self.rng = rng or random.Random()
        self.box = SecretBox(settings.secrets_keys)
        self._posts = asyncio.Semaphore(max(settings.delivery_concurrency, 1))
        self._pace = scripting.register(redis, "webhook_pace")
        self._defer = scripting.register(redis, "delivery_defer")
        self._posted = WEBHOOK_POSTS.labels(by)

    # -- secrets ---------------------------------------------------------------

    def read_secrets(self, customer: str) -> asyncio.Future[Any] | None:
        """The customer's stored (primary, secondary), as read, batched; None while this process read them
        less than SECRETS_FRESH_S ago (:meth:`secrets` answers them without a read)."""
        if _fresh_secrets(customer) is not None:
            return None
        return self._read_secrets(customer)

    def _read_secrets(self, customer: str) -> asyncio.Future[Any]:
        return self.batch.execute("HMGET", keys.webhook_secrets(customer), "primary", "secondary")

    async def secrets(self, customer: str, stored: asyncio.Future[Any] | None = None) -> WebhookSecrets | None:
        """The customer's signing secrets (None: it has none, webhooks go unsigned).

        ``stored``: their read, already under way. Raises SecretBoxError when
        they are sealed with a key this process lacks.

        Secrets read (and opened) here are kept for SECRETS_FRESH_S: a rotation
        (the new secret primary, the old one secondary) reaches this process's
        signatures within that time, while receivers accept either. No secrets
        is never kept, so the first webhook after a customer sets some is signed.
        """
        known = _fresh_secrets(customer)
        if known is not None:
            return known
        primary, secondary = await (stored if stored is not None else self._read_secrets(customer))
        opened = open_webhook_secrets(self.box, customer, primary, secondary or None)
        if not opened:
            return None
        secrets = WebhookSecrets(*opened)
        _keep_secrets(customer, secrets)
        return secrets

    # -- pace ------------------------------------------------------------------

    async def _held_back_by_host_pace(self, h: HookState, src: SendEntry, live: set[str], unclaimed: Unclaimed | None = None) -> bool:
        """Over its customer's pace at its host (``delivery_host_rps``, every sender of that customer):
        put the send back for when there is room, no attempt spent, and say so (``unclaimed``: claimed first)."""
        rps = self.settings.delivery_host_rps
        if rps <= 0:
            return False
        wait_ms = await delivery_scripts.pace(
            partial(self.batch.script, self._pace), h.customer, domain_of(h.url), rps=rps, burst=max(1, self.settings.delivery_host_burst)
        )  # on the Redis server's clock: every sender's
        if wait_ms <= 0:
            return False
        if unclaimed is not None and await unclaimed.claim() <= 0:
            return True  # the delivery service swept the hand-off meanwhile: it sends the webhook
        now = now_ms()
        due = now + wait_ms + int(self.rng.uniform(0, wait_ms))  # spread: the sends held back do not all come back at once
        route = route_for([r for r in h.regions.split(",") if r], h.attempts + 1, live)
        # src.edge: the delivery service sends it when due; it is no longer the edge's
        await delivery_scripts.defer(
            self._defer, h.job_id, h.hook, route=route, due_ms=due, stream=src.stream, group=src.group, entry_id=src.entry_id, edge=src.edge
        )
        WEBHOOK_PACED.inc()
        log.debug("webhook %s held back %d ms by its host's pace", h.hook, due - now, extra={"job_id": h.job_id, "region": self.log_region})
        return True

    # -- the POST and its record -------------------------------------------------

    async def post(
        self,
        h: HookState,
        src: SendEntry,
        live: set[str],
        stored: asyncio.Future[Any] | None = None,
        *,
        handoff: str = "",
        unclaimed: Unclaimed | None = None,
    ) -> bool:
        """POST webhook ``h`` once (or put it back, over its host's pace) and record the outcome.

        ``stored``: the read of ``h.customer``'s secrets, already under way. ``handoff``: a hand-off member
        the record removes in its step (delivery_record.lua); True when it did so (recorded), False when the
        webhook was put back instead and the caller still has it to remove. ``unclaimed`` (with ``handoff``):
        the hand-off is not claimed yet; the record writes its plan.
        """
        if await self._held_back_by_host_pace(h, src, live, unclaimed):
            return False
        body = h.payload.encode()
        attempt = h.attempts + 1
        try:
            secrets = await self.secrets(h.customer, stored)
        except SecretBoxError as exc:
            # Never unsigned when the customer has secrets: this attempt fails,
            # and is retried on the usual schedule (an operator fixes the keys).
            log.error("webhook not sent: its secrets are unreadable here: %s", exc, extra={"job_id": h.job_id, "customer": h.customer})
            result = SendResult(error=f"webhook secrets unreadable on this worker: {exc}")
        else:
            headers = signed_headers(body, message_id(h.job_id, h.hook), int(time.time()), secrets)
            headers["X-EZThrottle-Attempt"] = str(attempt)
            holding = None
            if unclaimed is not None:  # a POST still going when the hand-off's grace is half over keeps it from the sweep
                holding = asyncio.get_running_loop().call_later(max(0, unclaimed.hold_at_ms - now_ms()) / 1000, unclaimed.hold)
            try:
                async with self._posts:
                    result = await self.sender.post(h.url, body, headers)
            finally:
                if holding is not None:
                    holding.cancel()
            if not result.blocked:
                self._posted.inc()

        now = now_ms()
        decision = decide(
            result.status_code,
            blocked=result.blocked,
            failures=attempt - h.window_base,
            since_ms=h.since_ms or now,
            now_ms=now,
            base_s=self.settings.delivery_backoff_base_s,
            cap_s=self.settings.delivery_backoff_cap_s,
            window_s=self.settings.delivery_window_s,
            rng=self.rng,
        )
        due = now + int(decision.delay_s * 1000)
        route = route_for([r for r in h.regions.split(",") if r], attempt, live)
        posted = PostRecord(
            h.job_id, h.customer, h.hook, decision.action, result.status_code, result.error or "", due, route, decision.reason,
            self.node, self.region or "",
        )  # fmt: skip
        run = partial(self.batch.script, self.scripts.delivery_record)
        recorded = await asyncio.shield(
            delivery_scripts.record(
                run, posted, stream=src.stream, group=src.group, entry_id=src.entry_id, now_ms=now, handoff=handoff,
                plan=unclaimed.plan if unclaimed is not None else None,
            )
        )  # fmt: skip
        if unclaimed is not None and recorded.applied is Applied.GONE:
            log.info(  # a POST slower than the hand-off's grace and hold: the receiver may get the webhook twice (one webhook-id)
                "webhook %s: the delivery service took it over during this POST, and sends it again",
                h.hook,
                extra={"job_id": h.job_id, "region": self.log_region, "webhook": host_of(h.url), "status_code": result.status_code},
            )
            return True
        labelled(WEBHOOK_DELIVERIES, decision.action).inc()
        if recorded.applied is Applied.APPLIED and decision.action == DEAD:
            WEBHOOK_DEAD_LETTERS.labels(decision.reason).inc()
            if await self._quorum_lost_by(keys.job_webhooks(h.job_id), h.hook):
                WEBHOOK_QUORUM_MISSED.inc()
        if recorded.quorum_met_now and recorded.job_finished_ms:
            WEBHOOK_QUORUM_LATENCY.observe(max(now - recorded.job_finished_ms, 0) / 1000.0)
        log.info(
            "webhook %s: %s%s",
            h.hook,
            decision.action,
            f" ({decision.reason})" if decision.reason else (f" in {decision.delay_s:.2f}s" if decision.delay_s else ""),
            extra={
                "job_id": h.job_id,
                "region": self.log_region,
                "domain": domain_of(h.url),  # where this POST went
                "webhook": host_of(h.url),
                "status_code": result.status_code,
                "reason": result.error,
                "attempt": attempt,
            },
        )
        return bool(handoff)

    async def _quorum_lost_by(self, hooks_key: str, hook: int) -> bool:
        """Did dead-lettering voting webhook ``hook`` leave the job's quorum out of reach?

        The first dead letter to find it out of reach marks the job
        (``quorum_missed_ms``), so each job that misses its quorum is counted
        once, however many of its webhooks die at the same moment.
        """
        state = await self.redis.hgetall(hooks_key)  # type: ignore[misc]  # one read: votes and states agree with each other
        if state.get("quorum_met_ms") or "count" not in state:
            return False
        n = int(state["count"])
        if state.get(f"{hook}:vote") != "1":
            return False  # a webhook without a vote changes nothing
        open_votes = sum(1 for i in range(n) if state.get(f"{i}:vote") == "1" and state.get(f"{i}:state") not in (DELIVERED, DEAD))
        if int(state.get("votes") or 0) + open_votes >= int(state.get("quorum") or 1):
            return False
        return bool(await self.redis.hsetnx(hooks_key, "quorum_missed_ms", now_ms()))  # type: ignore[arg-type, misc]  # redis-py#2399
