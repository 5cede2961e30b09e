"""What the supervisor itself reports: which stages are up, how often they were restarted,
and whether the node is healthy (every stage up, rounds still completing)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.children import Child
from pipeline.configschema import Config
from pipeline.metrics import HealthCheck, sample_value
from stages.base.catalog import (
    CATALOG,
    INDEX_SIZE,
    MATCH_FINDINGS,
    RECORDS_DROPPED,
    RECORDS_IN,
    ROUND_COMPLETED,
    ROUNDS,
    STAGE_RESTARTS,
    STAGE_STALLS,
    STAGE_UP,
    WORKSPACE_COUNT,
)


class NodeCollector(Collector):
    """The supervisor's own state as metrics, read at scrape time (no files involved)."""

    def __init__(self, children: Sequence[Child]) -> None:
        self.children = children

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(STAGE_UP, CATALOG[STAGE_UP].help, labels=["stage", "instance"])
        restarts = CounterMetricFamily(
            STAGE_RESTARTS.removesuffix("_total"), CATALOG[STAGE_RESTARTS].help, labels=["stage"]
        )
        stalls = CounterMetricFamily(
            STAGE_STALLS.removesuffix("_total"), CATALOG[STAGE_STALLS].help, labels=["stage"]
        )
        per_stage: dict[str, int] = {}
        stalled: dict[str, int] = {}
        for c in self.children:
            up.add_metric([c.name, str(c.index)], 1.0 if c.pid is not None else 0.0)
            per_stage[c.name] = per_stage.get(c.name, 0) + c.restarts
            stalled[c.name] = stalled.get(c.name, 0) + c.stalls
        for name, n in per_stage.items():
            restarts.add_metric([name], float(n))
            stalls.add_metric([name], float(stalled[name]))
        yield up
        yield restarts
        yield stalls


def round_deadline(interval: float, grace: float) -> float:
    """How old the last completed round may be before the node is unhealthy."""
    return max(10.0, 3 * interval + grace)


def health_check(
    children: Sequence[Child], config: Config, started: float, registry: CollectorRegistry
) -> HealthCheck:
    """Healthy while every stage runs and rounds keep completing (the supervisor started
    its stages at ``started``)."""
    max_age = round_deadline(config.scan.interval, config.tree.grace)

    def check() -> tuple[bool, list[str]]:
        problems = [f"{c.label} is down" for c in children if c.pid is None]
        now = time.time()
        last = sample_value(registry, ROUND_COMPLETED)
        if last is None or last < started:
            if now - started > max_age:
                problems.append(f"no round has completed since start {now - started:.0f}s ago")
        elif now - last > max_age:
            problems.append(
                f"the last round completed {now - last:.0f}s ago (limit {max_age:.0f}s)"
            )
        return (not problems, problems)

    return check


# What the once-a-minute summary line counts: (label, exposition name, is a running total).
_SUMMARY = (
    ("rounds", ROUNDS, True),
    ("processes", INDEX_SIZE, False),
    ("workspaces", WORKSPACE_COUNT, False),
    ("judged", RECORDS_IN, True),  # counted for the match stage only
    ("findings", MATCH_FINDINGS, True),
    ("dropped", RECORDS_DROPPED, True),
)


def summary_counts(registry: CollectorRegistry) -> dict[str, float]:
    """The node's figures for the summary line, read in one collection: rounds, processes
    in the last round's index, workspaces, processes match received, findings, records
    dropped (running totals since start)."""
    counts = dict.fromkeys((label for label, _, _ in _SUMMARY), 0.0)
    wanted = {name: label for label, name, _ in _SUMMARY}
    for family in registry.collect():
        for sample in family.samples:
            label = wanted.get(sample.name)
            if label is None or (label == "judged" and sample.labels.get("stage") != "match"):
                continue
            counts[label] += float(sample.value)
    return counts


def summary_line(now: dict[str, float], before: dict[str, float], minutes: float) -> str:
    """One line an operator can read: totals, and for running totals the change since
    ``before`` (taken ``minutes`` ago)."""
    parts = []
    for label, _, running in _SUMMARY:
        value = int(now.get(label, 0))
        if running:
            delta = value - int(before.get(label, 0))
            parts.append(f"{label} {value} (+{delta})")
        else:
            parts.append(f"{label} {value}")
    return f"summary, last {round(minutes, 1):g} min: " + ", ".join(parts)
