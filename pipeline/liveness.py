"""What the supervisor reads from its stages' metrics to tell whether they really work.

Each stage process writes a heartbeat gauge as it goes round its loop (``pipeline.runner``);
one whose heartbeat is older than ``supervisor.stall_timeout`` has stalled (stopped, stuck
in a loop, deadlocked), even though its process is up. enforce reports the findings it holds
and the outputs it cannot write to; tree how many rounds in a row each shard was missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from pipeline.children import Child
from pipeline.wiring import TAPHUB
from stages.base.catalog import (
    ENFORCE_BACKLOG,
    ENFORCE_OUTPUT_FAILING,
    STAGE_HEARTBEAT,
    TREE_SHARD_MISSING_ROUNDS,
)

_READ = (STAGE_HEARTBEAT, ENFORCE_BACKLOG, ENFORCE_OUTPUT_FAILING, TREE_SHARD_MISSING_ROUNDS)


@dataclass(frozen=True)
class Reading:
    """The samples the checks need, taken in one collection of the node's metrics."""

    heartbeats: dict[str, float]  # stage label → last heartbeat (unix time)
    backlog: float
    failing: list[tuple[str, str]]  # (output, reason) of each output enforce cannot write
    missing_rounds: dict[str, float]  # shard → consecutive rounds without it


def read(registry: CollectorRegistry) -> Reading:
    heartbeats: dict[str, float] = {}
    backlog = 0.0
    failing: list[tuple[str, str]] = []
    missing: dict[str, float] = {}
    for family in registry.collect():
        for s in family.samples:
            if s.name not in _READ:
                continue
            if s.name == STAGE_HEARTBEAT:
                label = f"{s.labels.get('stage')}/{s.labels.get('instance')}"
                heartbeats[label] = max(heartbeats.get(label, 0.0), float(s.value))
            elif s.name == ENFORCE_BACKLOG:
                backlog += float(s.value)
            elif s.name == ENFORCE_OUTPUT_FAILING and s.value:
                failing.append((s.labels.get("output", "?"), s.labels.get("reason", "?")))
            elif s.name == TREE_SHARD_MISSING_ROUNDS:
                missing[s.labels.get("shard", "?")] = float(s.value)
    return Reading(heartbeats, backlog, sorted(failing), missing)


def stalled(
    children: Iterable[Child], reading: Reading, now: float, timeout: float
) -> list[tuple[Child, float]]:
    """The running children with no heartbeat for ``timeout`` seconds, and for how long.
    A child is given ``timeout`` from its start before its first heartbeat is due."""
    found = []
    for c in children:
        if c.pid is None or c.name == TAPHUB:  # the hub runs no stage loop
            continue
        last = max(c.started, reading.heartbeats.get(c.label, 0.0))
        if now - last > timeout:
            found.append((c, now - last))
    return found


def problems(
    reading: Reading, stalls: Sequence[tuple[Child, float]], timeout: float, max_missing: int
) -> list[str]:
    """What /healthz says about these readings (empty: nothing wrong)."""
    said = [f"{c.label} made no progress for {age:.0f}s (limit {timeout:g}s)" for c, age in stalls]
    said += [
        f"enforce cannot write findings to {output} ({reason})"
        for output, reason in reading.failing
    ]
    if reading.backlog:
        said.append(f"enforce holds {reading.backlog:.0f} findings not yet written out")
    said += [
        f"scan shard {shard} missing from the last {n:.0f} rounds (limit {max_missing})"
        for shard, n in sorted(reading.missing_rounds.items())
        if n >= max_missing
    ]
    return said
