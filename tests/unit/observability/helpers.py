"""What the observability tests share: every metric name the services can export."""

from __future__ import annotations

import re

from prometheus_client import REGISTRY

from ezthrottle_server.common import metrics

METRIC_NAME = re.compile(r"\b(ezt_[a-z0-9_]+)\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",), "summary": ("", "_sum", "_count")}


def exported_names() -> dict[str, str]:
    """Every ``ezt_`` series name a service may export -> its metric type."""
    assert metrics.SAMPLED  # the sampled gauges are registered on import
    names: dict[str, str] = {}
    for family in REGISTRY.collect():
        if family.name.startswith("ezt_"):
            for suffix in SUFFIXES.get(family.type, ("",)):
                names[family.name + suffix] = family.type
    for name in metrics.SampledGauges.FAMILIES:
        names[name] = "gauge"
    return names


def names_in(expr: str) -> set[str]:
    return set(METRIC_NAME.findall(expr))
