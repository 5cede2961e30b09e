"""The shape of the pipeline: which stage reads which endpoint and where its records go.

    scan (N) -ShardScan-> tree -Round-> classify -Workloads-> filter -Process-> match (M)
    events -ExecBatch-> classify -ExecWorkloads-> filter: processes read at their exec
    match -Finding-> enforce
    match, enforce -Judged-> filter: the stage that finishes with a process acknowledges it
    (match a clean one, enforce one with a finding once the finding is written out)

Stable stages bind their input; scaled stages connect everything, so the endpoint feeding a
scaled stage (``match``) is bound by its one producer. Records are routed by type, which is how
match sends findings on to enforce and verdicts back to filter.

Upstream of match nothing ever waits: a full queue drops the record, which is counted and
offered again next round (D7). match and enforce emit what must not be lost (a finding; the
verdict that completes a handover), so their sends wait for room, up to
``transport.send_timeout``. The filter never waits, so this cannot deadlock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.configschema import Config
from stages.base.schema import (
    ExecBatch,
    ExecWorkloads,
    Finding,
    Judged,
    Process,
    Round,
    ShardScan,
    Workloads,
)

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class StageWiring:
    name: str
    input: str | None  # the endpoint it pulls from; None for a source
    routes: dict[type, str]  # record type → endpoint it is pushed to
    scaled: bool = False
    waits: bool = False  # sends wait for room (bounded) instead of dropping


WIRING: dict[str, StageWiring] = {
    w.name: w
    for w in (
        StageWiring("scan", None, {ShardScan: "tree"}, scaled=True),
        StageWiring("tree", "tree", {Round: "classify"}),
        StageWiring("classify", "classify", {Workloads: "filter", ExecWorkloads: "filter"}),
        StageWiring("filter", "filter", {Process: "match"}),
        StageWiring(
            "match", "match", {Finding: "enforce", Judged: "filter"}, scaled=True, waits=True
        ),
        StageWiring("enforce", "enforce", {Judged: "filter"}, waits=True),
        StageWiring("events", None, {ExecBatch: "classify"}),
    )
}
STAGE_NAMES = tuple(WIRING)
# The tap hub: not a stage (it runs no stage logic), but a process the supervisor runs and
# `procsmith stage` can start, binding both tap endpoints.
TAPHUB = "taphub"
# Start order: consumers before producers, so the first round finds its peers.
START_ORDER = ("enforce", "match", "filter", "classify", "tree", "events", "scan")
# Stop order: producers first, so each stage can drain what its upstream sent.
STOP_ORDER = tuple(reversed(START_ORDER))


def binder_of(endpoint: str) -> str:
    """The stage that binds ``endpoint``: its consumer, unless the consumer is scaled."""
    consumer = WIRING[endpoint]
    if not consumer.scaled:
        return endpoint
    producers = [w.name for w in WIRING.values() if endpoint in w.routes.values()]
    assert len(producers) == 1 and not WIRING[producers[0]].scaled, endpoint  # noqa: S101
    return producers[0]


def binders() -> dict[str, str]:
    """endpoint → the process that binds it (the tap hub binds both tap endpoints)."""
    found = {name: binder_of(name) for name in WIRING if WIRING[name].input is not None}
    return {**found, "tap-in": TAPHUB, "tap-out": TAPHUB}


def replicas(name: str, config: Config) -> int:
    if name == "scan":
        return config.scan.shards
    if name == "match":
        return config.match.replicas
    if name == "events":
        return 0 if config.events.mode == "poll" else 1
    return 1
