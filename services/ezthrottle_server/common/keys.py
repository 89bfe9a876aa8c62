"""Every Redis key of EZThrottle, built in one place.

Cluster safety is visible here: keys that one Lua script touches together
share a hash tag (the part in braces), so the same code runs on Redis Cluster.
Keys without a tag (API keys, heartbeats, the coordinator lease, pacing's
ready sets) are each used alone: no script or multi-key command spans two of
them, and no code uses MULTI/EXEC. ``tests/cluster`` checks it on a real cluster.
One script is for one Redis only and spans two tags on purpose: ``accept.lua``
(``common/scripts/accept.lua``: a submission that takes its job from the
domain's limit in the same step); on a cluster it is never used.

Jobs live in *partitions*. A partition is one hash tag, ``{ezt:p<N>}``, and
holds everything a job's scripts touch: the idempotency key, the job record,
its attempts, each region's job stream, the delayed-work set and the delivery
stream. One Redis uses one partition (``EZT_PARTITIONS=1``); a cluster spreads
jobs over many. A job's partition is written into its id (``…p<N>``), so any
node can find the job from the id alone.

Layout::

    ezt:{ezt:p0}:idem:<customer>:<digest>   string -> job id (TTL = idempotency TTL)
    ezt:{ezt:p0}:job:<job_id>               hash   job record
    ezt:{ezt:p0}:job:<job_id>:attempts      list   one JSON entry per attempt
    ezt:{ezt:p0}:job:<job_id>:send-lease    string region:node allowed to send an unsafe request (TTL)
    ezt:events:<job_id>                     pubsub the job's live events (JSON), for /events streams
    ezt:{ezt:p0}:jobs:<region>              stream work for a region (group edge-<region>)
    ezt:{ezt:p0}:delayed                    zset   "<region>|<job_id>" scored by due time (ms)
    ezt:{ezt:p0}:spawn                      stream workflow events: a job with a chain is final, or a timer fired
    ezt:{ezt:p0}:timers                     zset   "<timer kind>|<job_id>" scored by due time (ms)
    ezt:{ezt:p0}:deliveries                 stream finished jobs for the delivery service (group delivery)
    ezt:{ezt:p0}:job:<job_id>:webhooks      hash   delivery state of the job's webhooks (common/deliveries.py)
    ezt:{ezt:p0}:job:<job_id>:frugal:<step> string claim of a FRUGAL step by an SDK webhook handler (TTL = job TTL)
    ezt:{ezt:p0}:deliveries:send:<route>    stream one entry per webhook send; route = a region or "any"
    ezt:{ezt:p0}:deliveries:scheduled       zset   "<route>|<job_id>|<hook>" scored by due time (ms)
    ezt:{ezt:p0}:deliveries:handoff         zset   "<job>[|<answer>]": webhooks handed to the finishing edge, by when delivery takes them
    ezt:{ezt:p0}:deliveries:dead            zset   job ids with a dead-lettered webhook, by time (ms)
    ezt:{ezt:p0}:deliveries:dead:c:<cust>   zset   the same, for one customer
    ezt:whpace:<customer>:<host:port>       string a customer's webhook pace at a host: GCRA arrival time, ms (webhook_pace.lua; TTL)
    ezt:bulk:<customer>:<action id>         hash   a bulk action (cancel, replay): params, state, progress (common/bulk.py; TTL)
    ezt:bulk:<customer>:<action id>:lease   string the runner holding it (renew_lease.lua; PX)
    ezt:bulk:<customer>:running             zset   the customer's bulk actions running, by creation (ms): the cap (TTL)
    ezt:bulk:orphans                        zset   "<customer>|<action id>" of running actions by their lease's expiry (ms): taken over
    ezt:{ezt:p0}:usage:<customer>:<YYYYMM>  string jobs created this month (quota)
    ezt:{ezt:p0}:queued                     hash   customer -> its jobs not yet final (admission ceiling)
    ezt:{ezt:p0}:c:<customer>:jobs          zset   the customer's jobs, "<created ms>|<job id>|<domain>" (common/job_index.py; TTL)
    ezt:customer:<id>                       hash   tier
    ezt:apikey:<sha256>                     hash   customer, created_ms, revoked
    ezt:authfail:<client>                   string failed authentications of a client address (TTL = window)
    ezt:customer:<id>:keys                  set    sha256 of the customer's keys
    ezt:customer:<id>:webhook-secrets       hash   primary, secondary
    ezt:coordinator:leader                  string lease holder (TTL)
    ezt:heartbeats                          hash   node id -> JSON heartbeat (region, ts_ms, inflight, outcomes)
    ezt:regions:state                       hash   region -> JSON {state, reason, since_ms, nodes, updated_ms}
    ezt:delivery:region:<region>            string a delivery worker of the region is alive (TTL)

Pacing (``pacing/``) keeps each target domain under its own hash tag,
``{ezt:d:<host:port>}``, so one domain's limit is one slot whatever the
partitions. A *scope* is what one limit governs: ``*`` (the domain, shared by
every customer), a customer id (domains configured per customer) or
``cred:<keyed hash>`` of a job's Authorization header (``scope: credential``)::

    ezt:{ezt:d:<dom>}:conf                  hash   operator overrides from domains.yaml
    ezt:{ezt:d:<dom>}:limit:<scope>         hash   GCRA tat/t, header limits, pause_until
    ezt:{ezt:d:<dom>}:wait:<scope>:<region> zset   waiting job ids by fair-queueing tag
    ezt:{ezt:d:<dom>}:fair:<scope>          hash   customer -> last tag; "~v" virtual time (all regions); "j:<job>" -> customer (waiting)
    ezt:{ezt:d:<dom>}:run:<scope>:<region>  zset   granted job ids by lease expiry (ms)
    ezt:pacing:ready:<region>               zset   "<dom>|<scope>" by when it may grant next (ms)
    ezt:{ezt:f:<hash>}:flow                 hash   a customer's flow-control key: tat, t, pause_until, key, customer, rate, parallelism
    ezt:{ezt:f:<hash>}:flow:run             zset   its sends in flight, by lease expiry (ms)
    ezt:fkeys:<hash of customer, domain>    set    the flow-control keys a customer's jobs used at a domain (TTL)
    ezt:{ezt:f:<hash>}:flow:deferred        zset   "<region>|<job id>" of the jobs it held back, by due time (ms)
    ezt:pacing:configured                   set    domains that domains.yaml overrides
    ezt:pacing:credential_key               string the key of the credential scopes' keyed hash (random, set once)
    ezt:pacing:config                       hash   digest, path, loaded_ms of the applied domains.yaml

Schedules (``common/schedules.py``) share one hash tag, ``{ezt:sched}``, so a
schedule, the due set and a customer's set are changed together by one
script; a fired job is then submitted in its own partition, apart::

    ezt:{ezt:sched}:s:<schedule id>         hash   the schedule (spec, next_ms, paused, firing, last_*)
    ezt:{ezt:sched}:due                     zset   schedule ids by next fire time (ms); paused ones are out
    ezt:{ezt:sched}:c:<customer>            set    the customer's schedule ids
    ezt:{ezt:sched}:firing                  zset   schedule ids whose claimed tick is being submitted, by claim time (ms)
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Mapping

PREFIX = "ezt"

_JOB_ID = re.compile(r"^job_\d{10,16}_[0-9a-f]{16}p(\d{1,4})$")


def partition_tag(partition: int) -> str:
    return f"{{{PREFIX}:p{partition}}}"


@functools.lru_cache(maxsize=4096)  # a job's id is parsed several times on its path
def job_partition(job_id: str) -> int | None:
    """The partition written into a job id, or None if the id is malformed."""
    m = _JOB_ID.match(job_id)
    return int(m.group(1)) if m else None


def partition_of(job_id: str) -> int:
    """The partition written into a job id that is known to be well formed (ValueError otherwise)."""
    p = job_partition(job_id)
    if p is None:
        raise ValueError(f"not a job id: {job_id!r}")
    return p


_PARTITION_TAG = re.compile(r"\{" + PREFIX + r":p(\d{1,4})\}")


def key_partition(key: str) -> int | None:
    """The partition whose hash tag a key carries (None: not a partition's key)."""
    m = _PARTITION_TAG.search(key)
    return int(m.group(1)) if m else None


def make_job_id(ms: int, rand_hex16: str, partition: int) -> str:
    return f"job_{ms}_{rand_hex16}p{partition}"


def idempotency(partition: int, customer: str, digest: str) -> str:
    return f"{PREFIX}:{partition_tag(partition)}:idem:{customer}:{digest}"


def job(job_id: str) -> str:
    p = job_partition(job_id)
    if p is None:
        raise ValueError(f"malformed job id {job_id!r}")
    return f"{PREFIX}:{partition_tag(p)}:job:{job_id}"


JOB_KEY_PATTERN = f"{PREFIX}:{{{PREFIX}:p*}}:job:*"  # SCAN MATCH: every job record (and its lists and hashes)


def attempts(job_id: str) -> str:
    return job(job_id) + ":attempts"


def region_stream(partition: int, region: str) -> str:
    return f"{PREFIX}:{partition_tag(partition)}:jobs:{region}"


def delayed(partition: int) -> str:
    return f"{PREFIX}:{partition_tag(partition)}:delayed"


def deliveries(partition: int) -> str:
    return f"{PREFIX}:{partition_tag(partition)}:deliveries"


def job_webhooks(job_id: str) -> str:
    return job(job_id) + ":webhooks"


def frugal_claim(job_id: str, step_id: str) -> str:
    """The claim that one SDK webhook handler runs a FRUGAL step (``<job_id>:<relation>``)."""
    return job(job_id) + ":frugal:" + step_id


def delivery_sends(partition: int, route: str) -> str:
    """Webhook sends for delivery workers of ``route`` (a region id, or ``"any"``)."""
    return f"{PREFIX}:{partition_tag(partition)}:deliveries:send:{route}"


def delivery_scheduled(partition: int) -> str:
    return f"{PREFIX}:{partition_tag(partition)}:deliveries:scheduled"


def delivery_handoff(partition: int) -> str:
    """Webhooks of finished jobs handed to the edge that finished them (finish.lua); delivery sweeps the late ones."""
    return f"{PREFIX}:{partition_tag(partition)}:deliveries:handoff"


def webhook_pace(customer: str, host: str) -> str:
    """The pace of one customer's webhook POSTs to one destination (``host:port``, common/urls.py
    domain_of); used alone. Per customer: another customer's flood to a host never delays these."""
    return f"{PREFIX}:whpace:{customer}:{host}"


def delivery_dead(partition: int, customer: str | None = None) -> str:
    """Dead letters of a partition, all customers' or one customer's."""
    base = f"{PREFIX}:{partition_tag(partition)}:deliveries:dead"
    return base if customer is None else f"{base}:c:{customer}"


def delivery_group() -> str:
    """Consumer group through which delivery workers share every delivery stream."""
    return "delivery"


def delivery_region_alive(region: str) -> str:
    return f"{PREFIX}:delivery:region:{region}"


def edge_group(region: str) -> str:
    """Consumer group through which a region's edges share its stream."""
    return f"edge-{region}"


def api_key(key_sha256: str) -> str:
    return f"{PREFIX}:apikey:{key_sha256}"


def auth_failures(client: str) -> str:
    """Failed authentications of one client address (an IPv4 address or IPv6 /64) in the current window."""
    return f"{PREFIX}:authfail:{client}"


def customer_keys(customer: str) -> str:
    return f"{PREFIX}:customer:{customer}:keys"


def webhook_secrets(customer: str) -> str:
    return f"{PREFIX}:customer:{customer}:webhook-secrets"


WEBHOOK_SECRETS_PATTERN = f"{PREFIX}:customer:*:webhook-secrets"  # SCAN MATCH: every customer's


def customer_of_webhook_secrets(key: str) -> str:
    return key[len(f"{PREFIX}:customer:") : -len(":webhook-secrets")]


def coordinator_leader() -> str:
    return f"{PREFIX}:coordinator:leader"


def coordinator_wake() -> str:
    """Pub/sub channel (not a key) that wakes the coordinator's sleeping loops (coordinator/wake.py; common/scripts/_wake.lua)."""
    return f"{PREFIX}:coordinator:wake"


def heartbeats() -> str:
    return f"{PREFIX}:heartbeats"


def region_states() -> str:
    return f"{PREFIX}:regions:state"


def domain_tag(domain: str) -> str:
    """The hash tag of one target domain (``host:port``, lower-cased)."""
    return f"{{{PREFIX}:d:{domain}}}"


def pacing_conf(domain: str) -> str:
    return f"{PREFIX}:{domain_tag(domain)}:conf"


def pacing_limit(domain: str, scope: str) -> str:
    return f"{PREFIX}:{domain_tag(domain)}:limit:{scope}"


def pacing_wait(domain: str, scope: str, region: str) -> str:
    return f"{PREFIX}:{domain_tag(domain)}:wait:{scope}:{region}"


def pacing_fair(domain: str, scope: str) -> str:
    return f"{PREFIX}:{domain_tag(domain)}:fair:{scope}"


def pacing_running(domain: str, scope: str, region: str) -> str:
    return f"{PREFIX}:{domain_tag(domain)}:run:{scope}:{region}"


def pacing_sent(domain: str, scope: str) -> str:
    """When the scope's last sends left, every region's (space.lua): no more than the limit in any window."""
    return f"{PREFIX}:{domain_tag(domain)}:sent:{scope}"


def flow_tag(customer: str, key: str) -> str:
    """A flow-control key's hash tag: one slot per (customer, key); the key is hashed (any string is allowed)."""
    return "{ezt:f:" + hashlib.sha256(f"{customer}\0{key}".encode()).hexdigest()[:32] + "}"


def flow(customer: str, key: str) -> str:
    """A customer's flow-control key: its rate (GCRA), pause, last rate and parallelism asked for (pacing/flow.py)."""
    return f"{PREFIX}:{flow_tag(customer, key)}:flow"


def flow_running(customer: str, key: str) -> str:
    """The sends of a flow-control key in flight, by when their lease expires (ms): its parallelism."""
    return f"{PREFIX}:{flow_tag(customer, key)}:flow:run"


def flow_keys_of(customer: str, domain: str) -> str:
    """The flow-control keys a customer's jobs used at a domain (for ``GET /api/v1/domains/{host}``); used alone."""
    return f"{PREFIX}:fkeys:" + hashlib.sha256(f"{customer}\0{domain}".encode()).hexdigest()[:32]


def flow_deferred(customer: str, key: str) -> str:
    """Jobs a flow-control key held back, as their delayed-set members ("<region>|<job id>") by due time: a resume brings them forward."""
    return f"{PREFIX}:{flow_tag(customer, key)}:flow:deferred"


def pacing_ready(region: str) -> str:
    return f"{PREFIX}:pacing:ready:{region}"


SHARED_SCOPE = "*"  # the scope of a domain whose customers share one limit (pacing/scope.py SHARED)


def pacing_ready_member(domain: str, scope: str) -> str:
    """How a scope appears in a region's ready set (``pacing_ready``): ``<dom>|<scope>``."""
    return f"{domain}|{scope}"


def pacing_configured() -> str:
    return f"{PREFIX}:pacing:configured"


def pacing_config_meta() -> str:
    return f"{PREFIX}:pacing:config"


CREDENTIAL_SCOPE_PREFIX = "cred:"  # the scope of one credential (pacing/scope.py): this, then a keyed hash of its header


def credential_scope(secret: bytes, headers: Mapping[str, str] | None) -> str:
    """The pacing scope of a job's credential (``scope: credential``): ``cred:`` and a keyed hash
    (HMAC-SHA256, 32 hex digits) of its ``Authorization`` header; ``SHARED_SCOPE`` without one."""
    value = next((v for k, v in (headers or {}).items() if k.lower() == "authorization"), None)
    if not value:
        return SHARED_SCOPE
    return CREDENTIAL_SCOPE_PREFIX + hmac.new(secret, value.encode(), hashlib.sha256).hexdigest()[:32]


def pacing_credential_key() -> str:
    """The key of the keyed hash that names a credential's scope (``pacing/scope.py``); written once, read alone."""
    return f"{PREFIX}:pacing:credential_key"


def usage(partition: int, customer: str, month: str) -> str:
    return f"{PREFIX}:{partition_tag(partition)}:usage:{customer}:{month}"


def quota_reservations(customer: str, month: str) -> str:
    """With several partitions: the requests of the customer's cap held this month (its own slot)."""
    return f"{PREFIX}:{{{PREFIX}:q:{customer}}}:quota:{month}"


def queued(partition: int) -> str:
    """Per customer, its jobs in this partition that are not final yet (submit.lua adds, finish.lua takes); and, as
    ``<customer>|bytes``, the bytes of their records (``common/storage.py``)."""
    return f"{PREFIX}:{partition_tag(partition)}:queued"


def kept_bytes(partition: int, bucket: str) -> str:
    """Per customer, the bytes of its jobs that ended in one time bucket of this partition, kept until their records
    expire (``common/storage.py``: ``bucket`` is ``<width ms>:<index>``)."""
    return f"{PREFIX}:{partition_tag(partition)}:kept:{bucket}"


def job_index(partition: int, customer: str) -> str:
    """The customer's jobs in this partition, newest last (common/job_index.py): written with each job, read by ``GET /api/v1/jobs``."""
    return f"{PREFIX}:{partition_tag(partition)}:c:{customer}:jobs"


def customer(customer_id: str) -> str:
    return f"{PREFIX}:customer:{customer_id}"


def send_lease(job_id: str) -> str:
    """Held by the one region allowed to send a request that is unsafe to repeat."""
    return job(job_id) + ":send-lease"


def job_events(job_id: str) -> str:
    """Pub/sub channel of one job's live events (not a key: no slot)."""
    return f"{PREFIX}:events:{job_id}"


def workflow_spawn(partition: int) -> str:
    """Workflow events of a partition, read by the coordinator (group ``workflow``)."""
    return f"{PREFIX}:{partition_tag(partition)}:spawn"


def workflow_timers(partition: int) -> str:
    return f"{PREFIX}:{partition_tag(partition)}:timers"


def workflow_group() -> str:
    return "workflow"


SCHEDULE_TAG = f"{{{PREFIX}:sched}}"


def schedule(schedule_id: str) -> str:
    return f"{PREFIX}:{SCHEDULE_TAG}:s:{schedule_id}"


def schedules_due() -> str:
    return f"{PREFIX}:{SCHEDULE_TAG}:due"


def customer_schedules(customer: str) -> str:
    return f"{PREFIX}:{SCHEDULE_TAG}:c:{customer}"


def schedules_firing() -> str:
    return f"{PREFIX}:{SCHEDULE_TAG}:firing"


def bulk_action(customer: str, action_id: str) -> str:
    """A customer's bulk action and its progress (common/bulk.py); used alone."""
    return f"{PREFIX}:bulk:{customer}:{action_id}"


def bulk_lease(customer: str, action_id: str) -> str:
    """Who runs a bulk action now (common/bulk.py); used alone."""
    return f"{PREFIX}:bulk:{customer}:{action_id}:lease"


def bulk_running(customer: str) -> str:
    """A customer's bulk actions not yet ended (common/bulk.py: the cap); used alone."""
    return f"{PREFIX}:bulk:{customer}:running"


def bulk_orphans() -> str:
    """Running bulk actions by their lease's expiry: an edge takes over those past it (common/bulk.py); used alone."""
    return f"{PREFIX}:bulk:orphans"
