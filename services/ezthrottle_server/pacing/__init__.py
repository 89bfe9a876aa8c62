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
  requests in flight per domain. Grants come 1% under the limit and a send
  that leaves late (busy node) pushes the schedule back. The grants only
  smooth the flow; the guarantee is at the send (next point).
- **Spaced at the moment of sending** (``scripts/space.lua``): grants spaced
  1/N apart in Redis time still arrive closer than that, because what happens
  between a grant and its request (a busy event loop, a region's longer path,
  the local profile's simulated latency) differs from send to send; a target
  that counts a sliding second then sees N+1 (measured before this: 0-8 429s
  per 120 requests at N = 2 over three edges, 20-25 per 1,150 at N = 20).
  So the last word is at the send itself: just before the request leaves,
  the node records it in the scope's log of recent sends, which admits at
  most N sends in any window of 1 s plus ``EZT_PACING_WINDOW_MARGIN_MS``
  (20 ms: room for what happens between leaving and arriving), and otherwise
  says how long to wait. A send whose answer came back late (a busy loop, a
  process the machine put aside) is recorded again as it leaves, so the sends
  after it count from then. We chose this over a wider rate margin because a
  margin only shrinks the odds (jitter has no bound), while the log makes N+1
  in a window impossible at the send, costs one batched round trip, and takes
  2% from the rate, the margin itself (N per 1.02 s; the GCRA's 1% is not
  added to it: a grant that comes early waits in the log, so the slower of
  the two bounds the rate, never both). A strict sliding-window target at
  N = 2, 20 and 100 over three edges answers no 429
  (tests/integration/pacing/test_strict_target.py, ``bench.pacing``).
- **Where a job waited** (measured with ``bench.pacing`` at N = 100 over
  three regions, before the fix: 0.72-0.84 N): not the log, not the
  per-node cap, but the hand-over between regions. Customers take turns in
  one fair order across regions, so a token belonged to the region holding
  the scope's first job, and a region that was not first looked again a
  *hand-over grace* (50 ms) after the token's time; at 100/s a token nobody
  claims within its 5 ms of tolerance is lost. One customer's jobs spread
  over three regions passed the turn at nearly every token, each time to a
  node that had to wake up for it. Two changes: the grace is at most half
  an interval (5 ms at 100/s, still 50 ms at 2/s), and an earlier first job
  of the *same customer* in another region no longer holds a region back
  (fairness is between customers; ``admit.lua`` notes each waiting job's
  customer). With both, 0.96-0.97 N over 15 s including the first second,
  97-100 a second after it, bounded by the log's 2%.
- **Targets tune it**: ``X-Aqueduct-Rps``/``X-EZTHROTTLE-RPS`` and
  ``…-Max-Concurrent`` headers set the limit for every node at its next grant;
  ``Retry-After`` on 429/503 pauses the domain everywhere. Values are clamped
  to the operator's ceiling; garbage is ignored and counted.
- **Limits learned from 429s** (``scripts/release.lua``, AIMD): a 429 cuts
  the scope's rate to 0.9 of what was in force (once per second at most),
  each success raises it by 0.17% until it is back at what config or the
  target's headers say. A target that enforces less than it advertises, or
  says nothing, is believed less: the rate's source reads ``learned``
  (``ezthrottle-admin domains show``, ``ezt_domain_rps_limit{source}``).
- **Operators override** per domain in ``domains.yaml`` (:mod:`.overrides`),
  applied to Redis by the coordinator when the file changes or on SIGHUP.
  ``scope: credential`` keeps one limit per value of the job's
  ``Authorization`` header instead (an API counting per API key), named by a
  keyed hash of the header (:mod:`.scope`); customers sending the same
  credential share it.
- **Circuit breaker** (``release.lua``, ``circuit()`` in the prelude): after
  consecutive failures to reach the target its jobs wait instead of spending
  attempts; one whose budget or ``start_before_ms`` runs out meanwhile ends
  ``failed`` with the error ``circuit_open``.
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
  saturated region). A region whose first job is the same customer's as an
  earlier one elsewhere need not wait for it: one customer's jobs keep their
  order in each region, not across regions. A domain can instead keep one
  scope (one limit, own headers) per customer.

Errors::

    PacingError
     └── OverridesError (ValueError)   domains.yaml is unusable
"""

from ..common.errors import EZThrottleServerError


class PacingError(EZThrottleServerError):
    """Root of the pacing package's errors."""


class OverridesError(PacingError, ValueError):
    """domains.yaml (or a domain named on the command line) is unusable; the message says why."""
