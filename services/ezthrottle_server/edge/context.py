"""What an edge node's handlers and loops share, built once at start."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from aiohttp import web

from ..common.config import Settings
from ..common.outbound import OutboundPolicy
from ..common.pubsub import EventHub
from ..common.redisconn import Scripts
from ..common.routing import RegionStates
from ..pacing.flow import FlowControl
from .admission import Admission
from .auth import Authenticator
from .executor import Executor
from .intake import Intake
from .outcomes import OutcomeWindow
from .probes import Prober
from .quota import Quotas
from .worker import RegionWorker

if TYPE_CHECKING:
    from ..common.redisconn import RedisClient


@dataclass
class EdgeContext:
    settings: Settings
    redis: RedisClient
    scripts: Scripts
    auth: Authenticator
    outbound: OutboundPolicy
    executor: Executor
    worker: RegionWorker
    regions: RegionStates
    quotas: Quotas
    admission: Admission
    events: EventHub
    outcomes: OutcomeWindow = field(default_factory=OutcomeWindow)
    ready: bool = False
    prober: Prober | None = None  # health probes of this node's outbound path, for the heartbeat
    region_usable: bool = False  # this node's region is usable in the published view (edge/app.py)
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def flow(self) -> FlowControl:
        """Customers' flow-control keys (pacing/flow.py), as this node's attempts use them."""
        return self.worker.attempts.flow

    @cached_property
    def intake(self) -> Intake:
        """Acceptance of validated jobs (edge/intake.py), over this node's worker, quotas and admission."""
        return Intake(self.settings, self.scripts, self.worker, self.regions, self.quotas, self.admission)


CTX = web.AppKey("edge_ctx", EdgeContext)
