"""Every record that travels between stages: one tagged union of msgspec Structs.

Rules for changing this module (old and new stage processes may meet on a socket during a
rolling restart): new fields get a default and go last; a field is never renamed or reused.
The high-volume records are ``array_like`` so a round of 50,000 processes does not carry
50,000 copies of every field name.
"""

from __future__ import annotations

import enum
from datetime import datetime

import msgspec


class Kind(enum.StrEnum):
    """What a process is to the detector (the reference's ProcessKind)."""

    UNKNOWN = "unknown"
    SANDBOX = "sandbox"
    SUPERVISOR = "supervisor"
    USER_WORKLOAD = "user_workload"


class Level(enum.StrEnum):
    """How sure a finding is, most severe first (agent-smith's levels)."""

    VERY = "very"
    AUDIT = "audit"
    BARELY = "barely"


class Workspace(msgspec.Struct, frozen=True):
    """A workspace found in the tree; ``pid`` is its supervisor's.

    ``provider`` names the rule that found it (``gitpod``: the tree; ``cgroup``: the
    process's cgroup, where ``pid`` is the earliest-started process of its container and
    ``container_id``/``pod_*`` say which container and Kubernetes pod it is).
    """

    owner_id: str
    workspace_id: str
    instance_id: str
    git_url: str
    pid: int
    provider: str = "gitpod"
    container_id: str = ""
    pod_uid: str = ""
    pod_namespace: str = ""
    pod_name: str = ""


class RawProcess(msgspec.Struct, array_like=True, frozen=True):
    """One process as a scan shard read it from procfs.

    ``gitpod_env`` is read only for ring1 candidates; ``None`` means it was not read or could
    not be read, which is different from an empty environment.
    ``exe_dev``/``exe_ino`` identify the executable (D8); 0 when ``exe`` cannot be resolved
    (kernel threads, zombies).
    ``cgroup`` is the cgroup path that attributes the process (``stages.cgroup``), read only
    when the cgroup provider is on; ``""`` when not read or unreadable.
    """

    pid: int
    ppid: int
    starttime: int
    comm: str
    cmdline: list[str]
    exe_dev: int = 0
    exe_ino: int = 0
    gitpod_env: dict[str, str] | None = None
    cgroup: str = ""
    # Where the executable pinned at exec can be reopened (``/proc/<holder>/fd/<n>``, holding
    # the file ``exe_dev``/``exe_ino``); "" when the record comes from a poll round.
    pin: str = ""
    # Issue 11: what tells one exec, one set of mapped code and one argv from another.
    exec_id: int = 0  # digest of the stat line's exec marks (stages.statline.exec_marks)
    # Digest of the file-backed executable mappings (stages.execview); 0: not read (the
    # scan's first read of a process does not; match answers with the digest it judged).
    maps_id: int = 0
    argv_bytes: int = 0  # the cmdline's full length, before any window was cut from it
    flags: int = 0  # stat field 9 (PF_KTHREAD tells a kernel thread)


class ShardScan(msgspec.Struct, tag="shard", frozen=True):
    """What one scan shard read in one round (scan → tree)."""

    round_id: int
    shard: int
    shards: int
    proc_root: str
    procs: list[RawProcess]
    listed: int = 0
    skipped: dict[str, int] = msgspec.field(default_factory=dict)
    started: float = 0.0  # wall-clock time the shard's read began
    # A shard's round travels in parts of at most scan.message_bytes each: ``part`` numbers
    # them from 0 and ``last`` marks the final one (which carries ``listed`` and ``skipped``).
    part: int = 0
    last: bool = True


class Round(msgspec.Struct, tag="round", frozen=True):
    """All shards of one round merged, sorted by pid (tree → classify)."""

    round_id: int
    proc_root: str
    procs: list[RawProcess]
    missing_shards: list[int] = msgspec.field(default_factory=list)
    started: float = 0.0  # the earliest shard's start: the round's age is measured from it


class Process(msgspec.Struct, tag="process", frozen=True):
    """A classified process: the record of SPEC §3, plus the executable identity (D8).

    ``hash`` is the reference's xxhash64 of pid, ppid and starttime, so records can be joined
    with agent-smith's output.
    """

    pid: int
    ppid: int
    starttime: int
    hash: int
    path: str
    cmdline: list[str]
    kind: Kind
    workspace: Workspace | None = None
    exe_dev: int = 0
    exe_ino: int = 0
    pin: str = ""  # the RawProcess's: match judges an exited process through it
    exec_id: int = 0
    maps_id: int = 0
    argv_bytes: int = 0
    flags: int = 0


class Workloads(msgspec.Struct, tag="workloads", frozen=True):
    """The user-workload processes of one round (classify → filter)."""

    round_id: int
    procs: list[Process]
    workspaces: int = 0
    started: float = 0.0


class Finding(msgspec.Struct, tag="finding", frozen=True):
    """A process that matched a signature or rule (match → enforce).

    One per process: the most severe level wins. ``classifier`` says which kind of rule
    matched (``signature``, ``commandline``); ``time`` is when the match was made (UTC).
    """

    process: Process
    signature: str
    level: Level
    classifier: str
    time: datetime
    # Issue 11: the file that matched, as the process sees it, and what it is to the process
    # (exe, mapping, script, cmdline, exe-path).
    file: str = ""
    file_role: str = ""


class Judged(msgspec.Struct, tag="judged", frozen=True):
    """A process match has finished with (match → filter, the at-least-once acknowledgement).

    ``outcome`` is a bounded label: ``clean``, ``finding``, or why it could not be judged
    (``vanished``, ``reused``, ``denied``, ``kernel``, ``error``).
    """

    process: Process
    outcome: str


class Filtered(msgspec.Struct, tag="filtered", frozen=True):
    """What the filter made of one round (filter → the tap only: no stage takes it).

    ``started`` is the round's start, as in ``Workloads``; ``handed_on`` counts the
    processes offered to match this round (new ones and ones sent again).
    """

    round_id: int
    started: float
    workloads: int
    handed_on: int


class ExecBatch(msgspec.Struct, tag="execs", frozen=True):
    """Processes read at their exec by the events stage (events → classify).

    ``ancestry[i]`` is ``(pid, starttime)`` of ``procs[i]``'s parent, grandparent and so on
    (read from procfs, or remembered from earlier reads), for classify to find the nearest
    one its last full round knows. ``complete``: not execs but a full read of procfs, made
    after events were lost; then ``ancestry`` is empty and ``procs`` is the whole tree.
    """

    proc_root: str
    procs: list[RawProcess]
    ancestry: list[list[tuple[int, int]]] = msgspec.field(default_factory=list)
    complete: bool = False
    started: float = 0.0


class ExecWorkloads(msgspec.Struct, tag="exec_workloads", frozen=True):
    """The user workloads among a batch of exec'd processes (classify → filter). Never a
    round: the filter judges them without counting a round or ageing its LRU."""

    procs: list[Process]
    execs: int = 0  # processes in the batch classify attributed (or not)
    started: float = 0.0


# Everything a stage may receive or emit. New record types are added here, and only here.
Record = (
    ShardScan
    | Round
    | Workloads
    | Process
    | Finding
    | Judged
    | Filtered
    | ExecBatch
    | ExecWorkloads
)

# The fields of SPEC §3, in order: what the CLI and the tap print for a process.
PROCESS_JSON_FIELDS = (
    "pid",
    "ppid",
    "starttime",
    "hash",
    "path",
    "cmdline",
    "kind",
    "workspace",
)
