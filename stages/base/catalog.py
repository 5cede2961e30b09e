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
# transport security (pipeline/curve.py; wired in by the runner and the tap hub)
TRANSPORT_PEERS_REFUSED = "procsmith_transport_peers_refused_total"
TRANSPORT_INSECURE = "procsmith_transport_insecure"
# issue 12 (trust boundary): penalties enforce refused because procfs did not confirm the
# finding (stages/verify.py)
ENFORCE_PENALTIES_REFUSED = "procsmith_enforce_penalties_refused_total"

# Issue 13, faults and floods: held findings, stalls, missing shards.
ENFORCE_BACKLOG = "procsmith_enforce_backlog"
ENFORCE_OUTPUT_FAILING = "procsmith_enforce_output_failing"
ENFORCE_BACKLOG_REFUSED = "procsmith_enforce_backlog_refused_total"
STAGE_HEARTBEAT = "procsmith_stage_heartbeat_timestamp_seconds"
STAGE_STALLS = "procsmith_stage_stalls_total"
TREE_SHARD_MISSING_ROUNDS = "procsmith_tree_shard_missing_rounds"
HTTP_DROPPED = "procsmith_http_connections_dropped_total"
MATCH_QUEUED = "procsmith_match_queued"
MATCH_QUEUE_REFUSED = "procsmith_match_queue_refused_total"

# issue 10: event-driven discovery (stages/events.py, classify, filter, match)
EVENTS_AVAILABLE = "procsmith_events_available"
EVENTS_RECEIVED = "procsmith_events_received_total"
EVENTS_LOST = "procsmith_events_lost_total"
EVENTS_RESYNCS = "procsmith_events_full_reads_total"
EVENTS_MALFORMED = "procsmith_events_malformed_total"
EVENTS_READ_SKIPPED = "procsmith_events_read_skipped_total"
EVENTS_PINS_HELD = "procsmith_events_pinned_files"
EVENTS_PINS_OVERFLOW = "procsmith_events_pins_overflow_total"
CLASSIFY_EXECS = "procsmith_classify_execs_total"
MATCH_PINNED = "procsmith_match_pinned_total"

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
            "frames a stage received and dropped, by reason (malformed, unexpected type, or a "
            "value no real peer sends: round_ahead, bad_shard, not_handed_on)",
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
        MetricSpec(
            TRANSPORT_PEERS_REFUSED,
            "counter",
            "connections to a tcp endpoint refused before any frame was read, by reason "
            "(unknown_key, no_curve, protocol, handshake)",
            ("stage", "endpoint", "reason"),
        ),
        MetricSpec(
            TRANSPORT_INSECURE,
            "gauge",
            "1 when this stage runs tcp without CURVE (transport.insecure = true)",
            ("stage",),
        ),
        # issue 12 (trust boundary)
        MetricSpec(
            ENFORCE_PENALTIES_REFUSED,
            "counter",
            "penalties not applied because procfs did not confirm the finding's target is "
            "inside its workspace, by reason",
            ("reason",),
        ),
        # Issue 13, faults and floods
        MetricSpec(
            ENFORCE_BACKLOG,
            "gauge",
            "findings held by enforce because an output could not take them yet",
            mode="livemostrecent",
        ),
        MetricSpec(
            ENFORCE_OUTPUT_FAILING,
            "gauge",
            "1 while the last write of a finding to an output failed, by output and errno",
            ("output", "reason"),
            mode="livemostrecent",
        ),
        MetricSpec(
            ENFORCE_BACKLOG_REFUSED,
            "counter",
            "findings left unacknowledged because enforce's backlog was full",
        ),
        MetricSpec(
            STAGE_HEARTBEAT,
            "gauge",
            "when a stage process last went round its loop (unix time)",
            ("stage", "instance"),
            mode="livemostrecent",
        ),
        MetricSpec(
            STAGE_STALLS,
            "counter",
            "stage processes that made no progress within supervisor.stall_timeout",
            ("stage",),
        ),
        MetricSpec(
            TREE_SHARD_MISSING_ROUNDS,
            "gauge",
            "consecutive rounds built without this scan shard",
            ("shard",),
            mode="livemostrecent",
        ),
        MetricSpec(
            HTTP_DROPPED,
            "counter",
            "metrics/health connections closed unanswered, by reason (timeout, cap, too_big)",
            ("reason",),
        ),
        MetricSpec(
            MATCH_QUEUED,
            "gauge",
            "processes waiting in match replicas to be judged",
            mode="livesum",
        ),
        MetricSpec(
            MATCH_QUEUE_REFUSED,
            "counter",
            "processes match refused (left unacknowledged) because its queue was full and "
            "their workspace had the most queued",
        ),
        # issue 10: event-driven discovery
        MetricSpec(
            EVENTS_AVAILABLE,
            "gauge",
            "1 while the events stage receives process events (reason live); 0 with the "
            "reason they are unavailable (polling goes on alone)",
            ("reason",),
        ),
        MetricSpec(EVENTS_RECEIVED, "counter", "process events received, by kind", ("kind",)),
        MetricSpec(
            EVENTS_LOST,
            "counter",
            "times events were or may have been lost (enobufs, overrun, truncated, error, "
            "restart, start: followed by a full read of procfs; dropped: a batch classify's "
            "queue refused)",
            ("reason",),
        ),
        MetricSpec(
            EVENTS_RESYNCS, "counter", "full reads of procfs the events stage made after a loss"
        ),
        MetricSpec(
            EVENTS_MALFORMED,
            "counter",
            "netlink messages not read as events, by reason",
            ("reason",),
        ),
        MetricSpec(
            EVENTS_READ_SKIPPED,
            "counter",
            "exec'd processes whose read at exec was given up, by reason",
            ("reason",),
        ),
        MetricSpec(EVENTS_PINS_HELD, "gauge", "executables the events stage holds open"),
        MetricSpec(
            EVENTS_PINS_OVERFLOW,
            "counter",
            "pins not taken or released early for a bound (evicted, refused)",
            ("reason",),
        ),
        MetricSpec(
            CLASSIFY_EXECS,
            "counter",
            "exec'd processes classify attributed against its last full round, by result "
            "(workload, outside)",
            ("result",),
        ),
        MetricSpec(
            MATCH_PINNED,
            "counter",
            "processes judged through their pinned executable, by result (judged, mismatch, "
            "unreadable)",
            ("result",),
        ),
    )
}

# Issue 14: workspace providers beyond Gitpod (stages/providers.py, stages/podlist.py)
POD_LIST_FETCHES = "procsmith_pod_list_fetches_total"
WORKSPACES_BY_PROVIDER = "procsmith_workspaces"
PODS_UNRESOLVED = "procsmith_workspace_pods_unresolved"
CATALOG.update(
    (spec.name, spec)
    for spec in (
        MetricSpec(
            POD_LIST_FETCHES,
            "counter",
            "fetches of the node's pod list (workspaces.pod_list_url), by result",
            ("result",),
        ),
        MetricSpec(
            WORKSPACES_BY_PROVIDER,
            "gauge",
            "workspaces found in the last round, by the provider that found them",
            ("provider",),
        ),
        MetricSpec(
            PODS_UNRESOLVED,
            "gauge",
            "pods attributed by UID alone in the last round: not in the pod list (or no list)",
        ),
    )
)

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
