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

# match and enforce (stages/match.py, stages/enforce.py)
MATCH_EXE_SCANS = "procsmith_match_exe_scans_total"
MATCH_CACHE = "procsmith_match_cache_total"
MATCH_SKIPPED = "procsmith_match_skipped_total"
MATCH_EXE_TRUNCATED = "procsmith_match_exe_truncated_total"
MATCH_FINDINGS = "procsmith_match_findings_total"
ENFORCE_PENALTIES = "procsmith_enforce_penalties_total"
ENFORCE_PENALTY_FAILURES = "procsmith_enforce_penalty_failures_total"
ENFORCE_WRITE_ERRORS = "procsmith_enforce_write_errors_total"

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
        # match and enforce
        MetricSpec(MATCH_EXE_SCANS, "counter", "executables scanned with the signatures"),
        MetricSpec(
            MATCH_CACHE, "counter", "executable verdict cache lookups, by result", ("result",)
        ),
        MetricSpec(
            MATCH_SKIPPED,
            "counter",
            "processes whose executable could not be judged, or that were gone, by reason",
            ("reason",),
        ),
        MetricSpec(
            MATCH_EXE_TRUNCATED, "counter", "executables judged only up to match.max_exe_bytes"
        ),
        MetricSpec(
            MATCH_FINDINGS,
            "counter",
            "findings made, by level and classifier",
            ("level", "classifier"),
        ),
        MetricSpec(
            ENFORCE_PENALTIES,
            "counter",
            "penalties attempted, by action and result (ok or failed)",
            ("action", "result"),
        ),
        MetricSpec(
            ENFORCE_PENALTY_FAILURES,
            "counter",
            "penalties that failed, by action and reason",
            ("action", "reason"),
        ),
        MetricSpec(ENFORCE_WRITE_ERRORS, "counter", "findings that could not be written out"),
    )
}
