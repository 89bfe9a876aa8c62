"""Grafana dashboards as code: ``infra/grafana/dashboards/*.json``.

    python -m ezthrottle_server.infra.dashboards            # write them
    python -m ezthrottle_server.infra.dashboards --check    # exit 1 if a file is out of date

Four dashboards, each a :class:`Board` of rows of :class:`Chart` s whose
queries are plain PromQL over the metrics of ``common/metrics.py``:

- **overview**: throughput, failures, queues, regions and leadership at a glance;
- **regions**: region health, attempts and latency per region, races, queues;
- **domains**: each busy target domain's limit and its source, pauses, waits;
- **delivery**: webhook outcomes, time to quorum, dead letters, backlog.

The specs below are the source; `grafana-foundation-sdk` (a development
dependency, pinned to the Grafana version compose runs) renders them, and
``tests/unit/observability`` checks the committed JSON is what this renders.
``tests/e2e/test_prometheus.py`` runs every query against a real Prometheus
scraping a real cluster. ``$__rate_interval`` is Grafana's: at least four
scrape intervals.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .generated import write_or_check

REPO = Path(__file__).resolve().parents[3]
DASHBOARDS_DIR = REPO / "infra" / "grafana" / "dashboards"
DATASOURCE_UID = "ezt-prometheus"  # infra/grafana/provisioning/datasources/prometheus.yaml
TAGS = ["ezthrottle"]
RATE = "$__rate_interval"

TIMESERIES, STAT, TABLE = "timeseries", "stat", "table"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class Chart:
    title: str
    description: str
    queries: Sequence[Query]
    kind: str = TIMESERIES
    unit: str = "short"
    width: int = 12
    height: int = 8
    states: dict[str, tuple[str, str]] = field(default_factory=dict)  # value -> (text, color), for stats
    thresholds: Sequence[tuple[float | None, str]] = ()  # (from value, color); None is the base


@dataclass(frozen=True)
class Board:
    uid: str
    file: str
    title: str
    description: str
    rows: Sequence[tuple[str, Sequence[Chart]]]

    def charts(self) -> Iterator[Chart]:
        for _row, charts in self.rows:
            yield from charts


def q(expr: str, legend: str = "", *, instant: bool = False) -> Query:
    return Query(" ".join(expr.split()), legend, instant)


def quantiles(metric: str, by: str = "", scale: str = "") -> list[Query]:
    """p50, p95 and p99 of a histogram, per ``by`` label if given."""
    group = f"{by}, le" if by else "le"
    prefix = f"{{{{{by}}}}} " if by else ""
    return [
        q(f"histogram_quantile({p}, sum by ({group}) (rate({metric}_bucket[{RATE}])))", f"{prefix}p{int(p * 100)}{scale}")
        for p in (0.5, 0.95, 0.99)
    ]


REGION_STATES = {"2": ("up", "green"), "1": ("degraded", "orange"), "0": ("down", "red")}

OVERVIEW = Board(
    uid="ezt-overview",
    file="overview.json",
    title="EZThrottle / Overview",
    description="What the dam is doing: jobs in and out, queues, regions, leadership.",
    rows=[
        (
            "At a glance",
            [
                Chart(
                    "Jobs accepted /s",
                    "Jobs accepted by every edge.",
                    [q(f"sum(rate(ezt_jobs_submitted_total[{RATE}]))")],
                    STAT,
                    "reqps",
                    4,
                    4,
                ),
                Chart(
                    "Failed share",
                    "Failed jobs among those that reached a final state.",
                    [
                        q(f"""sum(rate(ezt_jobs_finished_total{{status="failed"}}[{RATE}]))
                        / clamp_min(sum(rate(ezt_jobs_finished_total[{RATE}])), 1e-9)""")
                    ],
                    STAT,
                    "percentunit",
                    4,
                    4,
                    thresholds=[(None, "green"), (0.05, "orange"), (0.2, "red")],
                ),
                Chart(
                    "Jobs queued",
                    "Jobs in region streams and pacing queues, and running (sampled by the coordinator).",
                    [q("sum(ezt_queue_depth)")],
                    STAT,
                    "short",
                    4,
                    4,
                ),
                Chart(
                    "Oldest wait",
                    "The longest any job at the head of a queue has waited since submission.",
                    [q("max(ezt_queue_oldest_age_seconds)")],
                    STAT,
                    "s",
                    4,
                    4,
                    thresholds=[(None, "green"), (60, "orange"), (600, "red")],
                ),
                Chart(
                    "Regions down",
                    "Regions the coordinator judges down.",
                    [q("sum(ezt_region_state == bool 0)")],
                    STAT,
                    "short",
                    4,
                    4,
                    thresholds=[(None, "green"), (1, "red")],
                ),
                Chart(
                    "Active coordinators",
                    "Coordinators holding the lease: exactly 1.",
                    [q("sum(ezt_coordinator_leader)")],
                    STAT,
                    "short",
                    4,
                    4,
                    thresholds=[(None, "red"), (1, "green"), (2, "red")],
                ),
            ],
        ),
        (
            "Jobs",
            [
                Chart(
                    "Jobs by outcome",
                    "Accepted, answered as duplicates, and reaching a final state by outcome.",
                    [
                        q(f"sum(rate(ezt_jobs_submitted_total[{RATE}]))", "accepted"),
                        q(f"sum(rate(ezt_jobs_duplicate_total[{RATE}]))", "duplicate"),
                        q(f"sum by (status) (rate(ezt_jobs_finished_total[{RATE}]))", "{{status}}"),
                    ],
                    unit="reqps",
                ),
                Chart(
                    "Attempts by status class",
                    "Outbound attempts by answer class (2xx … 5xx) or error.",
                    [q(f"sum by (status_class) (rate(ezt_attempts_total[{RATE}]))", "{{status_class}}")],
                    unit="reqps",
                ),
                Chart(
                    "Queue depth by stage",
                    "stream: not yet admitted; waiting: behind their domain's limit; running: granted.",
                    [q("sum by (stage) (ezt_queue_depth)", "{{stage}}"), q("sum(ezt_delayed_jobs)", "delayed")],
                ),
                Chart(
                    "Accept to first send",
                    "From a job's acceptance to the grant of its first send (all regions).",
                    quantiles("ezt_pacing_wait_seconds"),
                    unit="s",
                ),
            ],
        ),
        (
            "Edges and API",
            [
                Chart(
                    "API requests by status",
                    "Public API requests by HTTP status.",
                    [q(f"sum by (status) (rate(ezt_api_requests_total[{RATE}]))", "{{status}}")],
                    unit="reqps",
                ),
                Chart(
                    "Refusals",
                    "Submissions shed by admission control, failed authentications and their 429s, outbound policy refusals.",
                    [
                        q(f"sum by (reason) (rate(ezt_admission_rejected_total[{RATE}]))", "shed: {{reason}}"),
                        q(f"sum(rate(ezt_auth_failures_total[{RATE}]))", "auth failed"),
                        q(f"sum(rate(ezt_auth_rate_limited_total[{RATE}]))", "auth rate-limited"),
                        q(f"sum by (stage) (rate(ezt_outbound_refused_total[{RATE}]))", "outbound refused: {{stage}}"),
                    ],
                    unit="reqps",
                ),
                Chart(
                    "Scrape targets up",
                    "Each EZThrottle process Prometheus scrapes, by component.",
                    [q('sum by (component) (up{job="ezthrottle"})', "{{component}}")],
                ),
                Chart(
                    "Attempts in flight",
                    "Outbound attempts in flight, per region.",
                    [q("sum by (region) (ezt_edge_inflight_attempts)", "{{region}}")],
                ),
            ],
        ),
    ],
)

REGIONS = Board(
    uid="ezt-regions",
    file="regions.json",
    title="EZThrottle / Regions and racing",
    description="Region health as the coordinator judges it, each region's attempts and queues, and who wins races.",
    rows=[
        (
            "Health",
            [
                Chart(
                    "Region state",
                    "2 up, 1 degraded, 0 down (from heartbeats and infrastructure failures).",
                    [q("max by (region) (ezt_region_state)", "{{region}}", instant=True)],
                    STAT,
                    "short",
                    12,
                    5,
                    states=REGION_STATES,
                ),
                Chart(
                    "Coordinator leadership",
                    "1 for the coordinator holding the lease; a standby shows 0.",
                    [q("max by (instance) (ezt_coordinator_leader)", "{{instance}}")],
                    unit="short",
                    width=12,
                    height=5,
                ),
                Chart(
                    "Region state over time",
                    "2 up, 1 degraded, 0 down.",
                    [q("max by (region) (ezt_region_state)", "{{region}}")],
                    width=24,
                    height=6,
                ),
                Chart(
                    "Jobs evacuated",
                    "Jobs moved out of a region judged down, by where they went (coordinator/evacuate.py).",
                    [q(f"sum by (from, to) (rate(ezt_jobs_evacuated_total[{RATE}]))", "{{from}} to {{to}}")],
                    unit="reqps",
                    width=24,
                    height=6,
                ),
            ],
        ),
        (
            "Work per region",
            [
                Chart(
                    "Jobs accepted per region",
                    "By the region of the edge that accepted them.",
                    [q(f"sum by (region) (rate(ezt_jobs_submitted_total[{RATE}]))", "{{region}}")],
                    unit="reqps",
                ),
                Chart(
                    "Attempts per region and class",
                    "Outbound attempts by region and answer class.",
                    [q(f"sum by (region, status_class) (rate(ezt_attempts_total[{RATE}]))", "{{region}} {{status_class}}")],
                    unit="reqps",
                ),
                Chart(
                    "Attempt latency p95",
                    "Outbound attempt latency (target answer time plus the network), per region.",
                    [q(f"histogram_quantile(0.95, sum by (region, le) (rate(ezt_attempt_latency_seconds_bucket[{RATE}])))", "{{region}}")],
                    unit="s",
                ),
                Chart(
                    "Routing p99",
                    "Grant to send: how long a granted send waits for its node (a busy node shows "
                    "here). Accept to send: jobs the accepting edge sent at once, from the job durable to its send.",
                    [
                        q(
                            f"histogram_quantile(0.99, sum by (region, le) (rate(ezt_routing_latency_seconds_bucket[{RATE}])))",
                            "grant to send {{region}}",
                        ),
                        q(
                            f"histogram_quantile(0.99, sum by (region, le) (rate(ezt_accept_to_send_seconds_bucket[{RATE}])))",
                            "accept to send {{region}}",
                        ),
                    ],
                    unit="s",
                ),
                Chart(
                    "Failed jobs per region and reason",
                    "Jobs whose final outcome was a failure.",
                    [q(f'sum by (region, reason) (rate(ezt_jobs_finished_total{{status="failed"}}[{RATE}]))', "{{region}} {{reason}}")],
                    unit="reqps",
                ),
                Chart(
                    "Reclaimed and repaired",
                    "Stream entries a live node took over from a dead one; jobs the coordinator "
                    "found held by nothing and queued again (0 unless a Redis Cluster failover lost writes).",
                    [
                        q(f"sum by (region) (rate(ezt_jobs_reclaimed_total[{RATE}]))", "reclaimed {{region}}"),
                        q(f"sum(rate(ezt_jobs_repaired_total[{RATE}]))", "repaired"),
                    ],
                    unit="reqps",
                ),
            ],
        ),
        (
            "Racing",
            [
                Chart(
                    "Race wins per region",
                    "Raced jobs whose final outcome this region claimed first.",
                    [q(f"sum by (region) (rate(ezt_race_wins_total[{RATE}]))", "{{region}}")],
                    unit="reqps",
                    width=8,
                ),
                Chart(
                    "Race losses per region",
                    "Raced jobs another region claimed first.",
                    [q(f"sum by (region) (rate(ezt_race_losses_total[{RATE}]))", "{{region}}")],
                    unit="reqps",
                    width=8,
                ),
                Chart(
                    "Win share per region",
                    "Wins among the races a region took part in.",
                    [
                        q(
                            f"""sum by (region) (rate(ezt_race_wins_total[{RATE}]))
                        / clamp_min(sum by (region) (rate(ezt_race_wins_total[{RATE}]))
                        + sum by (region) (rate(ezt_race_losses_total[{RATE}])), 1e-9)""",
                            "{{region}}",
                        )
                    ],
                    unit="percentunit",
                    width=8,
                ),
            ],
        ),
        (
            "Queues",
            [
                Chart(
                    "Queue depth per region",
                    "stream: not yet admitted; waiting: behind a domain's limit; running: granted.",
                    [q("sum by (region, stage) (ezt_queue_depth)", "{{region}} {{stage}}")],
                ),
                Chart(
                    "Oldest wait per region",
                    "Age of the oldest stream entry, and of the oldest job at the head of a pacing queue.",
                    [q("max by (region, stage) (ezt_queue_oldest_age_seconds)", "{{region}} {{stage}}")],
                    unit="s",
                ),
                Chart(
                    "Unacknowledged stream entries",
                    "Read by an edge, not yet admitted (XPENDING).",
                    [q("sum by (region) (ezt_stream_pending_entries)", "{{region}}")],
                ),
                Chart(
                    "Delayed work",
                    "Jobs waiting for retry_at or a retry backoff, releases per second, and how late the first one is.",
                    [
                        q("sum(ezt_delayed_jobs)", "delayed jobs"),
                        q(f"sum(rate(ezt_delayed_released_total[{RATE}]))", "released /s"),
                        q("max(ezt_delayed_overdue_seconds)", "overdue (s)"),
                    ],
                ),
            ],
        ),
    ],
)

DOMAINS = Board(
    uid="ezt-domains",
    file="domains.json",
    title="EZThrottle / Target domains and pacing",
    description=(
        "Each busy target domain's limit and where it comes from (default, config, header), its pauses and the jobs "
        'waiting behind it. The busiest 20 domains by name, the rest as "other".'
    ),
    rows=[
        (
            "Domains",
            [
                Chart(
                    "Active domains", "Target domains with jobs waiting or running.", [q("max(ezt_domains_active)")], STAT, "short", 6, 4
                ),
                Chart(
                    "Paused domains",
                    "Domains paused by a Retry-After right now.",
                    [q("sum(ezt_domain_paused)")],
                    STAT,
                    "short",
                    6,
                    4,
                    thresholds=[(None, "green"), (1, "orange")],
                ),
                Chart(
                    "Limit sources",
                    "How many of the busiest domains take their rps limit from each source.",
                    [q("count by (source) (ezt_domain_rps_limit)", "{{source}}", instant=True)],
                    STAT,
                    "short",
                    12,
                    4,
                ),
                Chart(
                    "Circuit breakers",
                    "Each busy domain's circuit: 0 closed, 1 half open (a probe may go), 2 open (consecutive connection"
                    " failures, timeouts, 502/504: its jobs wait instead of spending attempts).",
                    [q("max by (domain) (ezt_domain_circuit_state)", "{{domain}}")],
                    unit="short",
                    width=24,
                    height=6,
                ),
                Chart(
                    "Current limits",
                    "requests/s limit of each busy domain and its source (ezthrottle-admin domains show).",
                    [q("max by (domain, source) (ezt_domain_rps_limit)", "{{domain}} ({{source}})", instant=True)],
                    TABLE,
                    "reqps",
                    12,
                    8,
                ),
                Chart(
                    "In-flight limit per node",
                    "Each busy domain's max concurrent sends per node, and its source.",
                    [q("max by (domain, source) (ezt_domain_max_concurrent)", "{{domain}} ({{source}})", instant=True)],
                    TABLE,
                    "short",
                    12,
                    8,
                ),
                Chart(
                    "Limit over time",
                    "requests/s limit per domain (a header-tuned limit moves here).",
                    [q("max by (domain) (ezt_domain_rps_limit)", "{{domain}}")],
                    unit="reqps",
                ),
                Chart(
                    "Learned limits",
                    "Domains whose 429s taught a lower rate than their config or headers say (source learned: cut to 0.9"
                    " on a 429, won back slowly on success; ezthrottle-admin domains show).",
                    [q('max by (domain) (ezt_domain_rps_limit{source="learned"})', "{{domain}}")],
                    unit="reqps",
                ),
                Chart(
                    "Pause left",
                    "Time left on each domain's Retry-After pause.",
                    [q("max by (domain) (ezt_domain_pause_remaining_seconds)", "{{domain}}")],
                    unit="s",
                ),
            ],
        ),
        (
            "Rate-limit waits",
            [
                Chart(
                    "Jobs waiting per domain",
                    "Jobs parked behind their domain's limit, all regions.",
                    [q('sum by (domain) (ezt_domain_queue_depth{stage="waiting"})', "{{domain}}")],
                ),
                Chart(
                    "Jobs running per domain",
                    "Granted sends in flight per domain.",
                    [q('sum by (domain) (ezt_domain_queue_depth{stage="running"})', "{{domain}}")],
                ),
                Chart(
                    "Oldest wait per domain",
                    "Since submission of the oldest job at the head of the domain's queues.",
                    [q("max by (domain) (ezt_domain_oldest_wait_seconds)", "{{domain}}")],
                    unit="s",
                ),
                Chart(
                    "Accept to first send per region",
                    "Queueing behind domain limits, p50/p95/p99 per region.",
                    quantiles("ezt_pacing_wait_seconds", "region"),
                    unit="s",
                ),
            ],
        ),
        (
            "Pacer",
            [
                Chart(
                    "Grants per region",
                    "Sends the pacer let go to their domains.",
                    [q(f"sum by (region) (rate(ezt_pacing_grants_total[{RATE}]))", "{{region}}")],
                    unit="reqps",
                    width=8,
                ),
                Chart(
                    "Retry-After pauses",
                    "Domains paused by a 429/503 with Retry-After.",
                    [q(f"sum by (region) (rate(ezt_pacing_pauses_total[{RATE}]))", "{{region}}")],
                    unit="reqps",
                    width=8,
                ),
                Chart(
                    "Late sends",
                    "Granted sends that left late (busy node); their domain's schedule moved back.",
                    [q(f"sum by (region) (rate(ezt_pacing_late_sends_total[{RATE}]))", "{{region}}")],
                    unit="reqps",
                    width=8,
                ),
                Chart(
                    "Invalid rate headers",
                    "Rate-limit headers from targets ignored as invalid.",
                    [q(f"sum by (header) (rate(ezt_pacing_header_invalid_total[{RATE}]))", "{{header}}")],
                    unit="reqps",
                    width=8,
                ),
                Chart(
                    "Leases recovered",
                    "Granted jobs queued again because their node's lease expired.",
                    [q(f"sum by (region) (rate(ezt_pacing_leases_recovered_total[{RATE}]))", "{{region}}")],
                    unit="reqps",
                    width=8,
                ),
                Chart(
                    "domains.yaml loads",
                    "Loads of the domain overrides by result (applied, unchanged, error).",
                    [q("sum by (result) (ezt_pacing_config_loads_total)", "{{result}}")],
                    width=8,
                ),
            ],
        ),
    ],
)

DELIVERY = Board(
    uid="ezt-delivery",
    file="delivery.json",
    title="EZThrottle / Webhook delivery",
    description="Webhook POSTs by outcome, time to quorum, quorum misses, dead letters and the delivery backlog.",
    rows=[
        (
            "At a glance",
            [
                Chart(
                    "Delivered share",
                    "Delivered POSTs among all webhook POSTs.",
                    [
                        q(f"""sum(rate(ezt_webhook_deliveries_total{{outcome="delivered"}}[{RATE}]))
                        / clamp_min(sum(rate(ezt_webhook_deliveries_total[{RATE}])), 1e-9)""")
                    ],
                    STAT,
                    "percentunit",
                    6,
                    4,
                    thresholds=[(None, "red"), (0.8, "orange"), (0.95, "green")],
                ),
                Chart(
                    "Dead-letter jobs",
                    "Jobs with a dead-lettered webhook, kept for replay.",
                    [q("sum(ezt_webhook_dead_letter_jobs)")],
                    STAT,
                    "short",
                    6,
                    4,
                    thresholds=[(None, "green"), (1, "orange")],
                ),
                Chart(
                    "Quorum misses (1h)",
                    "Jobs whose webhook quorum became unreachable in the last hour.",
                    [q("sum(increase(ezt_webhook_quorum_missed_total[1h]))")],
                    STAT,
                    "short",
                    6,
                    4,
                    thresholds=[(None, "green"), (1, "red")],
                ),
                Chart(
                    "POSTs in flight",
                    "Webhook entries delivery workers are working on.",
                    [q("sum(ezt_webhook_inflight)")],
                    STAT,
                    "short",
                    6,
                    4,
                ),
            ],
        ),
        (
            "Deliveries",
            [
                Chart(
                    "POSTs by outcome",
                    "delivered, retry (scheduled again) or dead (dead-lettered).",
                    [q(f"sum by (outcome) (rate(ezt_webhook_deliveries_total[{RATE}]))", "{{outcome}}")],
                    unit="reqps",
                ),
                Chart(
                    "Time to quorum", "From a job's final state to its webhook quorum.", quantiles("ezt_webhook_quorum_seconds"), unit="s"
                ),
                Chart(
                    "Dead letters by reason",
                    "window_exhausted, gone (410) or outbound_blocked.",
                    [q(f"sum by (reason) (rate(ezt_webhook_dead_letters_total[{RATE}]))", "{{reason}}")],
                    unit="reqps",
                ),
                Chart(
                    "Quorum misses, replays, reclaims",
                    "Jobs whose quorum became unreachable, dead letters queued again by a replay, entries taken over from dead workers.",
                    [
                        q(f"sum(rate(ezt_webhook_quorum_missed_total[{RATE}]))", "quorum missed"),
                        q(f"sum(rate(ezt_webhook_replayed_total[{RATE}]))", "replayed"),
                        q(f"sum(rate(ezt_webhook_reclaimed_total[{RATE}]))", "reclaimed"),
                    ],
                    unit="reqps",
                ),
            ],
        ),
        (
            "Backlog",
            [
                Chart(
                    "Backlog by stage",
                    "finished: jobs not yet planned; send: POSTs queued; scheduled: retries waiting.",
                    [q("sum by (stage) (ezt_webhook_backlog)", "{{stage}}")],
                ),
                Chart(
                    "Dead-letter jobs over time",
                    "Jobs with a dead-lettered webhook.",
                    [q("sum(ezt_webhook_dead_letter_jobs)", "dead-letter jobs")],
                ),
            ],
        ),
    ],
)

BOARDS: tuple[Board, ...] = (OVERVIEW, REGIONS, DOMAINS, DELIVERY)


# -- rendering (grafana-foundation-sdk) ------------------------------------------


def render(board: Board) -> dict[str, Any]:
    """The dashboard JSON Grafana's file provider loads."""
    from grafana_foundation_sdk.builders import common, dashboard, prometheus, stat, table, timeseries
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.common import BigValueGraphMode
    from grafana_foundation_sdk.models.dashboard import (
        DashboardCursorSync,
        DataSourceRef,
        Threshold,
        ThresholdsMode,
        ValueMap,
        ValueMappingResult,
    )
    from grafana_foundation_sdk.models.prometheus import PromQueryFormat

    datasource = DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
    builders: dict[str, type[timeseries.Panel | stat.Panel | table.Panel]] = {
        TIMESERIES: timeseries.Panel,
        STAT: stat.Panel,
        TABLE: table.Panel,
    }
    out = (
        dashboard.Dashboard(board.title)
        .uid(board.uid)
        .description(board.description)
        .tags(TAGS)
        .refresh("10s")
        .time("now-1h", "now")
        .timezone("browser")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .readonly()
    )
    panel_id = 0
    for row_title, charts in board.rows:
        panel_id += 1
        out = out.with_row(dashboard.Row(row_title).id(panel_id))
        for chart in charts:
            panel_id += 1
            panel = (
                builders[chart.kind]()
                .id(panel_id)
                .title(chart.title)
                .description(chart.description)
                .datasource(datasource)
                .unit(chart.unit)
                .span(chart.width)
                .height(chart.height)
            )
            for i, query in enumerate(chart.queries):
                target = prometheus.Dataquery().expr(query.expr).ref_id(chr(ord("A") + i)).datasource(datasource)
                if query.legend:
                    target = target.legend_format(query.legend)
                if query.instant or chart.kind == TABLE:
                    target = target.instant()
                if chart.kind == TABLE:
                    target = target.format(PromQueryFormat.TABLE)
                panel = panel.with_target(target)
            if chart.states:
                panel = panel.mappings(
                    [ValueMap({v: ValueMappingResult(text=t, color=c, index=i) for i, (v, (t, c)) in enumerate(chart.states.items())})]
                )
            if chart.thresholds:
                steps = [Threshold(value=v, color=c) for v, c in chart.thresholds]
                panel = panel.thresholds(dashboard.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps))
            if isinstance(panel, stat.Panel):  # chart.kind == STAT
                panel = panel.graph_mode(BigValueGraphMode.AREA).reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]))
            out = out.with_panel(panel)
    rendered: dict[str, Any] = json.loads(json.dumps(out.build(), cls=JSONEncoder))
    return rendered


def render_text(board: Board) -> str:
    return json.dumps(render(board), indent=2, sort_keys=True) + "\n"


def exprs(dashboard_json: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every query of a rendered dashboard."""
    for panel in dashboard_json.get("panels", []):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
        for inner in panel.get("panels", []):  # collapsed rows keep their panels inside
            for target in inner.get("targets", []):
                yield inner["title"], target["expr"]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ezthrottle_server.infra.dashboards", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DASHBOARDS_DIR)
    p.add_argument("--check", action="store_true", help="exit 1 if a committed dashboard differs from what this renders")
    args = p.parse_args(argv)
    files = {args.out / board.file: render_text(board) for board in BOARDS}
    return write_or_check(files, check=args.check, command="python -m ezthrottle_server.infra.dashboards")


if __name__ == "__main__":
    sys.exit(main())
