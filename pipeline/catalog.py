"""Every metric procsmith exports, in one place.

The detector's families keep the reference's names (SPEC §5) so existing dashboards keep
working. Stage code counts through a ``Meter`` by these names; an unknown name is an error in
every meter, so a typo fails a unit test rather than silently exporting nothing.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

MetricType = Literal["counter", "gauge", "histogram"]


class MetricSpec(NamedTuple):
    name: str  # the exposition name; counters end in _total
    type: MetricType
    help: str
    labels: tuple[str, ...] = ()


_DETECTOR = "gitpod_agent_smith_procfs_detector_"

INDEX_SIZE = _DETECTOR + "index_size"
CACHE_USE = _DETECTOR + "cache_use_total"
WORKSPACE_COUNT = _DETECTOR + "workspace_count"
SCAN_SKIPPED = "procsmith_scan_skipped_total"
SCAN_TRUNCATED = "procsmith_scan_truncated_total"

CATALOG: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec(INDEX_SIZE, "gauge", "number of entries in the last procfs scan index"),
        MetricSpec(CACHE_USE, "counter", "process cache statistics", ("use",)),
        MetricSpec(WORKSPACE_COUNT, "gauge", "number of detected workspaces"),
        MetricSpec(SCAN_SKIPPED, "counter", "processes a scan skipped, by reason", ("reason",)),
        MetricSpec(
            SCAN_TRUNCATED, "counter", "procfs files cut at their read bound, by file", ("file",)
        ),
    )
}
