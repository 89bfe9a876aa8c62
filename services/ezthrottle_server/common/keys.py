"""Every Redis key of EZThrottle, built in one place.

Cluster safety is visible here: keys that one Lua script touches together
share a hash tag (the part in braces), so the same code runs on Redis Cluster.

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
    ezt:{ezt:p0}:jobs:<region>              stream work for a region (group edge-<region>)
    ezt:{ezt:p0}:delayed                    zset   "<region>|<job_id>" scored by due time (ms)
    ezt:{ezt:p0}:deliveries                 stream finished jobs for the delivery service
    ezt:apikey:<sha256>                     hash   customer, created_ms, revoked
    ezt:customer:<id>:keys                  set    sha256 of the customer's keys
    ezt:customer:<id>:webhook-secrets       hash   primary, secondary
    ezt:node:<node_id>                      string heartbeat (TTL)
    ezt:coordinator:leader                  string lease holder (TTL)
"""

from __future__ import annotations

import re

PREFIX = "ezt"

_JOB_ID = re.compile(r"^job_\d{10,16}_[0-9a-f]{16}p(\d{1,4})$")


def partition_tag(partition: int) -> str:
    return f"{{{PREFIX}:p{partition}}}"


def job_partition(job_id: str) -> int | None:
    """The partition written into a job id, or None if the id is malformed."""
    m = _JOB_ID.match(job_id)
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


def attempts(job_id: str) -> str:
    return job(job_id) + ":attempts"


def region_stream(partition: int, region: str) -> str:
    return f"{PREFIX}:{partition_tag(partition)}:jobs:{region}"


def delayed(partition: int) -> str:
    return f"{PREFIX}:{partition_tag(partition)}:delayed"


def deliveries(partition: int) -> str:
    return f"{PREFIX}:{partition_tag(partition)}:deliveries"


def edge_group(region: str) -> str:
    """Consumer group through which a region's edges share its stream."""
    return f"edge-{region}"


def api_key(key_sha256: str) -> str:
    return f"{PREFIX}:apikey:{key_sha256}"


def customer_keys(customer: str) -> str:
    return f"{PREFIX}:customer:{customer}:keys"


def webhook_secrets(customer: str) -> str:
    return f"{PREFIX}:customer:{customer}:webhook-secrets"


def node_heartbeat(node_id: str) -> str:
    return f"{PREFIX}:node:{node_id}"


def coordinator_leader() -> str:
    return f"{PREFIX}:coordinator:leader"
