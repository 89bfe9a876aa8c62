"""Pacing: every target domain sees one steady, bounded rate, whatever the
number of jobs, nodes or regions, and no job is lost while it waits.

How a job goes through it::

    region stream ──read──▶ admit (wait zset of its scope) ──ack the entry
                                   │
          pacing:ready:<region> ◀──┘  "<domain>|<scope>" by when it may grant
                 │
    each node's Scheduler polls the due scopes ──grant.lua──▶ running zset
                 (GCRA + pause + per-node cap)        (lease, renewed while sending)
                 │
    attempt: start_attempt → send → finish/requeue ──release.lua (headers, pause)

- **One limit per domain** (``host:port``, lower-cased), shared by every node
  of every region: GCRA state in Redis, decided in one Lua script on the
  domain's hash tag, against the Redis server's clock. A per-node cap bounds
  requests in flight per domain.
- **Targets tune it**: ``X-Aqueduct-Rps``/``X-EZTHROTTLE-RPS`` and
  ``…-Max-Concurrent`` headers set the limit for every node at its next grant;
  ``Retry-After`` on 429/503 pauses the domain everywhere. Values are clamped
  to the operator's ceiling; garbage is ignored and counted.
- **Operators override** per domain in ``domains.yaml`` (:mod:`.overrides`),
  applied to Redis by the coordinator when the file changes or on SIGHUP.
- **No head-of-line blocking**: a waiting job holds no worker slot and no
  stream entry; nodes only ever ask due scopes for work, so a paused or slow
  domain costs other domains nothing.
- **Durable waiting**: waiting and running jobs live in Redis. A granted job
  carries a lease its node renews; when a node dies its leases expire and the
  next grant on that scope puts the jobs back at the front of the queue.
- **Fairness**: within a scope, jobs get start-time fair-queueing tags per
  customer, so customers are served round-robin. A domain can instead keep
  one scope (one limit, own headers) per customer.

Errors::

    PacingError
     └── OverridesError (ValueError)   domains.yaml is unusable
"""


class PacingError(Exception):
    """Root of the pacing package's errors."""


class OverridesError(PacingError, ValueError):
    """domains.yaml (or a domain named on the command line) is unusable; the message says why."""
