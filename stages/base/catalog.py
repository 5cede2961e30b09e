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
    # How a gauge written by several processes is combined (prometheus multiprocess mode):
    # every gauge here has one writer per label set, so the most recent value is the value.
    mode: str = "mostrecent"


_DETECTOR = "gitpod_agent_smith_procfs_detector_"

INDEX_SIZE = _DETECTOR + "index_size"
CACHE_USE = _DETECTOR + "cache_use_total"
WORKSPACE_COUNT = _DETECTOR + "workspace_count"
SCAN_SKIPPED = "procsmith_scan_skipped_total"
SCAN_TRUNCATED = "procsmith_scan_truncated_total"
RECORDS_IN = "procsmith_stage_records_in_total"
RECORDS_OUT = "procsmith_stage_records_out_total"
RECORDS_DROPPED = "procsmith_stage_records_dropped_total"
RECORDS_REFUSED = "procsmith_stage_records_refused_total"
INPUT_DISCONNECTS = "procsmith_stage_input_disconnects_total"
ROUND_DURATION = "procsmith_round_duration_seconds"
ROUNDS = "procsmith_rounds_total"
ROUND_COMPLETED = "procsmith_round_completed_timestamp_seconds"
TREE_MISSING_SHARDS = "procsmith_tree_missing_shards_total"
TREE_LATE_SHARDS = "procsmith_tree_late_shards_total"
FILTER_INFLIGHT = "procsmith_filter_inflight"
FILTER_RETRIES = "procsmith_filter_retries_total"
FILTER_GAVE_UP = "procsmith_filter_gave_up_total"
# Served by the supervisor itself, from its own state (not written by stage processes).
STAGE_UP = "procsmith_stage_up"
STAGE_RESTARTS = "procsmith_stage_restarts_total"

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
        MetricSpec(RECORDS_IN, "counter", "records a stage received", ("stage",)),
        MetricSpec(RECORDS_OUT, "counter", "records a stage handed to the next", ("stage",)),
        MetricSpec(
            RECORDS_DROPPED,
            "counter",
            "records a stage could not hand on because the next stage's queue was full",
            ("stage",),
        ),
        MetricSpec(
            RECORDS_REFUSED,
            "counter",
            "frames a stage received and dropped, by reason (malformed, unexpected type)",
            ("stage", "reason"),
        ),
        MetricSpec(
            INPUT_DISCONNECTS,
            "counter",
            "connections to a stage's input that closed: a peer that stopped, or one ZeroMQ "
            "cut off for sending a frame over transport.max_message_bytes",
            ("stage",),
        ),
        MetricSpec(ROUND_DURATION, "histogram", "from a round's first shard read to its filtering"),
        MetricSpec(ROUNDS, "counter", "scan rounds that reached the filter"),
        MetricSpec(ROUND_COMPLETED, "gauge", "when the last round reached the filter (unix time)"),
        MetricSpec(
            TREE_MISSING_SHARDS, "counter", "shards left out of a round because they were late"
        ),
        MetricSpec(TREE_LATE_SHARDS, "counter", "shards that arrived after their round was built"),
        MetricSpec(FILTER_INFLIGHT, "gauge", "processes handed to match and not yet judged"),
        MetricSpec(
            FILTER_RETRIES, "counter", "processes offered again: no verdict within ack_timeout"
        ),
        MetricSpec(
            FILTER_GAVE_UP, "counter", "processes given up on after filter.max_attempts offers"
        ),
        MetricSpec(STAGE_UP, "gauge", "1 while a stage process runs", ("stage", "instance")),
        MetricSpec(
            STAGE_RESTARTS, "counter", "stage processes restarted by the supervisor", ("stage",)
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

# Issue 11: what a process runs (mappings, scripts), bounded; what could not be judged.
MATCH_FILES = "procsmith_match_files_total"
MATCH_FILES_CUT = "procsmith_match_files_cut_total"
MATCH_UNJUDGEABLE = "procsmith_match_unjudgeable_total"
CATALOG.update(
    {
        spec.name: spec
        for spec in (
            MetricSpec(MATCH_FILES, "counter", "files judged for a process, by role", ("role",)),
            MetricSpec(
                MATCH_FILES_CUT,
                "counter",
                "files of a process left unjudged: over match.max_mappings or "
                "match.max_process_bytes, by reason (count, bytes)",
                ("reason",),
            ),
            MetricSpec(
                MATCH_UNJUDGEABLE,
                "counter",
                "files a process runs that could not be read (reported as findings), by role "
                "and reason",
                ("role", "reason"),
            ),
        )
    }
)
