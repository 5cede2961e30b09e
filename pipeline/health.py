"""What the supervisor itself reports: which stages are up, how often they were restarted,
and whether the node is healthy (every stage up, rounds still completing)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.catalog import CATALOG, ROUND_COMPLETED, STAGE_RESTARTS, STAGE_UP
from pipeline.metrics import HealthCheck, sample_value

if TYPE_CHECKING:
    from pipeline.supervisor import Child, Supervisor


class NodeCollector(Collector):
    """The supervisor's own state as metrics, read at scrape time (no files involved)."""

    def __init__(self, children: Sequence[Child]) -> None:
        self.children = children

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(STAGE_UP, CATALOG[STAGE_UP].help, labels=["stage", "instance"])
        restarts = CounterMetricFamily(
            STAGE_RESTARTS.removesuffix("_total"), CATALOG[STAGE_RESTARTS].help, labels=["stage"]
        )
        per_stage: dict[str, int] = {}
        for c in self.children:
            up.add_metric([c.name, str(c.index)], 1.0 if c.pid is not None else 0.0)
            per_stage[c.name] = per_stage.get(c.name, 0) + c.restarts
        for name, n in per_stage.items():
            restarts.add_metric([name], float(n))
        yield up
        yield restarts


def round_deadline(interval: float, grace: float) -> float:
    """How old the last completed round may be before the node is unhealthy."""
    return max(10.0, 3 * interval + grace)


def health_check(supervisor: Supervisor, registry: CollectorRegistry) -> HealthCheck:
    config = supervisor.config
    max_age = round_deadline(config.scan.interval, config.tree.grace)

    def check() -> tuple[bool, list[str]]:
        problems = [f"{c.label} is down" for c in supervisor.children if c.pid is None]
        now = time.time()
        last = sample_value(registry, ROUND_COMPLETED)
        if last is None or last < supervisor.started:
            if now - supervisor.started > max_age:
                problems.append(
                    f"no round has completed since start {now - supervisor.started:.0f}s ago"
                )
        elif now - last > max_age:
            problems.append(
                f"the last round completed {now - last:.0f}s ago (limit {max_age:.0f}s)"
            )
        return (not problems, problems)

    return check
