"""Pacing: every target domain sees one steady, bounded rate, whatever the
number of jobs, nodes or regions, and no job is lost while it waits.

How a job goes through it::

    region stream ──read──▶ admit (wait zset of its scope) ──ack the entry
                                   │
          pacing:ready:<region> ◀──┘  "<domain>|<scope>" by when it may grant
                 │
    each node's Scheduler polls the due scopes ──grant.lua──▶ running zset
          (GCRA + pause + per-node cap + fair turn)    (a lease per grant, renewed while sending)
                 │
    attempt: start_attempt → send → finish/requeue ──release.lua (headers, pause)
                             └─ left late? late.lua moves the schedule back

- **One limit per domain** (``host:port``, lower-cased), shared by every node
  of every region: GCRA state in Redis, decided in one Lua script on the
  domain's hash tag, against the Redis server's clock. A per-node cap bounds
  requests in flight per domain. The pace is 1% under the limit and a send
  that leaves late (busy node) pushes the schedule back, so network and
  scheduling jitter don't put N+1 requests into one second at the target.
- **Targets tune it**: ``X-Aqueduct-Rps``/``X-EZTHROTTLE-RPS`` and
  ``…-Max-Concurrent`` headers set the limit for every node at its next grant;
  ``Retry-After`` on 429/503 pauses the domain everywhere. Values are clamped
  to the operator's ceiling; garbage is ignored and counted.
- **Operators override** per domain in ``domains.yaml`` (:mod:`.overrides`),
  applied to Redis by the coordinator when the file changes or on SIGHUP.
- **No head-of-line blocking**: a waiting job holds no worker slot and no
  stream entry; nodes only ever ask due scopes for work, so a paused or slow
  domain costs other domains nothing.
- **Durable waiting**: waiting and running jobs live in Redis. Each grant is a
  lease (``<job>@<n>``) its node renews; when a node dies its leases expire
  and the next grant on that scope puts the jobs back at the front of the
  queue. A stopping node puts back at once what it could not send.
- **Fairness**: jobs get fair-queueing tags per customer (consecutive per
  customer, starting at the scope's virtual time), shared by every region's
  queue of the scope, so customers are served in turn whichever region they
  use: a node takes a token only when its region holds the scope's first job,
  unless the rightful region leaves it unclaimed for a short grace (dead or
  saturated region). A domain can instead keep one scope (one limit, own
  headers) per customer.

Errors::

    PacingError
     └── OverridesError (ValueError)   domains.yaml is unusable
"""

from ..common.errors import EZThrottleServerError


class PacingError(EZThrottleServerError):
    """Root of the pacing package's errors."""


class OverridesError(PacingError, ValueError):
    """domains.yaml (or a domain named on the command line) is unusable; the message says why."""
