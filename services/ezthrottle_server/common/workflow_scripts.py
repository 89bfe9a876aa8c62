"""Typed calls of the workflow scripts (``coordinator/workflows.py``): each names its keys and arguments.

``spawn_child.lua`` (start a job's continuation, once), ``claim_continuation.lua``
(claim a FRUGAL step the client runs) and ``fire_timers.lua`` (due workflow
timers to the workflow stream). The scripts' own comments say what they do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from . import job_index, keys
from .job_scripts import Swept
from .scripting import ScriptRun


class Spawned(IntEnum):
    """What ``spawn_child.lua`` did."""

    CLAIMED_BEFORE = 0  # another continuation of the parent was claimed first: nothing started
    CREATED = 1
    EXISTED = 2  # a repeat: the child this continuation created before


@dataclass(frozen=True)
class SpawnReply:
    spawned: Spawned
    child_id: str  # the child's id ('' when CLAIMED_BEFORE)
    claimed: str  # the relation claimed first (CLAIMED_BEFORE), else ''


@dataclass(frozen=True)
class Child:
    """Everything ``spawn_child.lua`` writes for a workflow child (a job of its own, in its parent's partition)."""

    parent_id: str
    child_id: str
    customer: str
    relation: str  # on_success, on_failure, fallback
    fields: Mapping[str, Any]  # the record (coordinator.workflows.child_fields)
    streams: Sequence[str]  # regions whose stream gets an entry
    timers: Sequence[tuple[int, str]]  # (due ms, kind) of its workflow timers
    due_ms: int  # 0: now
    now_ms: int
    month: str
    domain: str  # of its url (host:port), for the customer's job index
    index_ttl_s: int  # job_index.ttl_s
    usage_ttl_s: int

    def keys(self) -> list[str]:
        p = keys.partition_of(self.child_id)
        return [
            keys.job(self.parent_id), keys.job(self.child_id), keys.delayed(p), keys.workflow_timers(p), keys.queued(p),
            keys.job_index(p, self.customer), keys.usage(p, self.customer, self.month),
            *(keys.region_stream(p, r) for r in self.streams),
        ]  # fmt: skip

    def args(self) -> list[Any]:
        flat = [x for kv in self.fields.items() for x in kv]
        timers = [x for due, kind in self.timers for x in (due, kind)]
        return [
            self.relation, self.child_id, self.now_ms, self.due_ms, len(self.fields),
            job_index.member(self.now_ms, self.child_id, self.domain), self.index_ttl_s, job_index.too_old(self.now_ms, self.index_ttl_s),
            self.usage_ttl_s, *flat, *self.streams, *timers,
        ]  # fmt: skip


async def spawn_child(run: ScriptRun, child: Child) -> SpawnReply:
    """``spawn_child.lua``: claim the parent's continuation and create the child in the same step."""
    code, value = await run(keys=child.keys(), args=child.args())
    spawned = Spawned(int(code))
    if spawned is Spawned.CLAIMED_BEFORE:
        return SpawnReply(spawned, "", str(value))
    return SpawnReply(spawned, str(value), "")


async def claim_continuation(run: ScriptRun, job_id: str, relation: str) -> bool:
    """``claim_continuation.lua``: claim the job's continuation for ``relation`` without starting a child (a FRUGAL step).

    True if claimed now or before by this relation, False if another won.
    """
    return int(await run(keys=[keys.job(job_id)], args=[relation])) == 1


async def fire_timers(run: ScriptRun, partition: int, *, now_ms: int, most: int) -> Swept:
    """``fire_timers.lua``: hand the partition's due workflow timers to its workflow stream."""
    return Swept.parse(await run(keys=[keys.workflow_timers(partition), keys.workflow_spawn(partition)], args=[now_ms, most]))
