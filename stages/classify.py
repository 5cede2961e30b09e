"""The classify stage's logic: find the workspaces in the tree and the kind of every process."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple, Protocol

import xxhash

from stages.attribution import LastRound
from stages.base.catalog import CLASSIFY_EXECS, INDEX_SIZE, WORKSPACE_COUNT
from stages.base.contract import Stage
from stages.base.meter import Meter
from stages.base.schema import (
    ExecBatch,
    ExecWorkloads,
    Kind,
    Process,
    RawProcess,
    Record,
    Round,
    Workloads,
    Workspace,
)
from stages.procfs import WORKSPACE_ENV, is_ring1
from stages.redact import strip_userinfo

SUPERVISOR_ARGV = ["supervisor", "init"]
ROOT_PID = 1


class Node:
    """A pid in the index: its record (``None`` for a placeholder) and its children."""

    __slots__ = ("children", "pid", "proc")

    def __init__(self, pid: int, proc: RawProcess | None = None) -> None:
        self.pid = pid
        self.proc = proc
        self.children: list[Node] = []


def build_index(procs: Iterable[RawProcess]) -> dict[int, Node]:
    """Index processes by pid and link each to its parent.

    A parent not seen yet gets a placeholder, filled in if that pid appears later, so the
    order of the input does not matter (pids wrap: a child's pid can be lower than its
    parent's). Children keep the order of the input, which is pid order for a Round.
    """
    index: dict[int, Node] = {}
    for proc in procs:
        parent = index.get(proc.ppid)
        if parent is None:
            parent = index[proc.ppid] = Node(proc.ppid)
        node = index.get(proc.pid)
        if node is None:
            node = index[proc.pid] = Node(proc.pid)
        node.proc = proc
        parent.children.append(node)
    return index


def reference_hash(pid: int, ppid: int, starttime: int) -> int:
    """xxhash64 of pid ‖ ppid ‖ starttime as little-endian uint64s: the reference's value."""
    digest = pid.to_bytes(8, "little") + ppid.to_bytes(8, "little")
    return xxhash.xxh64_intdigest(digest + starttime.to_bytes(8, "little"))


class Classification(NamedTuple):
    """Kind and workspace of every process inside a workspace; all others are unknown."""

    inside: dict[int, tuple[Kind, Workspace]]
    workspaces: int

    def kind(self, pid: int) -> Kind:
        entry = self.inside.get(pid)
        return Kind.UNKNOWN if entry is None else entry[0]


def classify(index: dict[int, Node], root_pid: int = ROOT_PID) -> Classification:
    """Walk the tree from ``root_pid`` and classify what is reachable.

    D3: the walk is iterative and visits a pid once, so a 100,000-deep chain, a cycle or a
    pid that names itself as parent cannot recurse or loop. D6: inside a workspace only the
    workspace's own supervisor is ``supervisor``; everything else, a nested ring1 or a second
    ``supervisor init`` included, is ``user_workload``.
    """
    inside: dict[int, tuple[Kind, Workspace]] = {}
    workspaces = 0
    root = index.get(root_pid)
    stack: list[tuple[Node, Workspace | None]] = [] if root is None else [(root, None)]
    visited: set[int] = set()
    while stack:
        node, ws = stack.pop()
        if node.pid in visited:
            continue
        visited.add(node.pid)
        if ws is not None:
            kind = Kind.SUPERVISOR if node.pid == ws.pid else Kind.USER_WORKLOAD
            inside[node.pid] = (kind, ws)
        elif node.proc is not None and is_ring1(node.proc.cmdline):
            ws = sandbox_workspace(node)
            if ws is not None:
                inside[node.pid] = (Kind.SANDBOX, ws)
                workspaces += 1
        stack.extend((child, ws) for child in node.children)
    return Classification(inside, workspaces)


def sandbox_workspace(ring1: Node) -> Workspace | None:
    """The workspace a ring1 process is the sandbox of, or ``None`` if it is not one.

    D4: any child with argv exactly ``supervisor init`` qualifies; of several, the
    earliest-started (starttime, then pid) is the supervisor.
    """
    env = ring1.proc.gitpod_env if ring1.proc is not None else None
    if env is None:
        return None
    supervisors = [
        c.proc
        for c in ring1.children
        if c is not ring1 and c.proc is not None and c.proc.cmdline == SUPERVISOR_ARGV
    ]
    if not supervisors:
        return None
    supervisor = min(supervisors, key=lambda p: (p.starttime, p.pid))
    fields = {field: env.get(key, "") for key, field in WORKSPACE_ENV.items()}
    # scan strips it already; again here, so a Round from elsewhere cannot carry a token on.
    fields["git_url"] = strip_userinfo(fields["git_url"])
    return Workspace(pid=supervisor.pid, **fields)


def process_record(proc: RawProcess, kind: Kind, ws: Workspace | None, proc_root: str) -> Process:
    """The SPEC §3 record of a raw process. D2: ``path`` is absolute under ``proc_root``."""
    return Process(
        pid=proc.pid,
        ppid=proc.ppid,
        starttime=proc.starttime,
        hash=reference_hash(proc.pid, proc.ppid, proc.starttime),
        path=f"{proc_root}/{proc.pid}/exe",
        cmdline=proc.cmdline,
        kind=kind,
        workspace=ws,
        exe_dev=proc.exe_dev,
        exe_ino=proc.exe_ino,
        pin=proc.pin,
        exec_id=proc.exec_id,
        maps_id=proc.maps_id,
        argv_bytes=proc.argv_bytes,
        flags=proc.flags,
    )


def user_workloads(
    index: dict[int, Node], classification: Classification, proc_root: str
) -> list[Process]:
    """The ``user_workload`` processes as records, ascending by pid."""
    out = []
    for pid in sorted(classification.inside):
        kind, ws = classification.inside[pid]
        proc = index[pid].proc
        if kind is Kind.USER_WORKLOAD and proc is not None:
            out.append(process_record(proc, kind, ws, proc_root))
    return out


class FindWorkspaces(Protocol):
    """The active workspace providers (``stages.providers.Providers``): the kind and
    workspace of every process inside one, by each provider in turn."""

    def find(self, index: dict[int, Node], procs: Sequence[RawProcess]) -> Classification: ...


def classify_round(
    rnd: Round,
    meter: Meter,
    providers: FindWorkspaces | None = None,
    last: LastRound | None = None,
) -> Workloads:
    """Index a round, classify it and keep its user workloads; sets the detector's gauges.
    Without ``providers``, the Gitpod tree rule alone. ``last`` is told what the round
    found, for processes that exec before the next one."""
    index = build_index(rnd.procs)
    meter.set(INDEX_SIZE, len(index))
    classification = classify(index) if providers is None else providers.find(index, rnd.procs)
    meter.set(WORKSPACE_COUNT, classification.workspaces)
    if last is not None:
        last.update(classification.inside, {p.pid: p.starttime for p in rnd.procs})
    return Workloads(
        round_id=rnd.round_id,
        procs=user_workloads(index, classification, rnd.proc_root),
        workspaces=classification.workspaces,
        started=rnd.started,
    )


def classify_execs(
    batch: ExecBatch, last: LastRound, meter: Meter, providers: FindWorkspaces | None = None
) -> ExecWorkloads:
    """The user workloads among processes read at their exec (``stages.attribution``). A
    complete batch (a full read after lost events) is classified as a round is, and becomes
    the last round; it is still not a round to the filter."""
    if batch.complete:
        rnd = Round(-1, batch.proc_root, batch.procs, started=batch.started)
        full = classify_round(rnd, meter, providers, last)
        return ExecWorkloads(full.procs, len(batch.procs), batch.started)
    out: list[Process] = []
    for i, proc in enumerate(batch.procs):
        found = last.attribute(proc, batch.ancestry[i] if i < len(batch.ancestry) else [])
        if found is not None:
            out.append(process_record(proc, found[0], found[1], batch.proc_root))
    if out:
        meter.inc(CLASSIFY_EXECS, len(out), result="workload")
    if len(batch.procs) > len(out):
        meter.inc(CLASSIFY_EXECS, len(batch.procs) - len(out), result="outside")
    return ExecWorkloads(out, len(batch.procs), batch.started)


class ClassifyStage(Stage):
    accepts = (Round, ExecBatch)

    def __init__(self, meter: Meter, providers: FindWorkspaces | None = None) -> None:
        self.meter = meter
        self.providers = providers
        self.last = LastRound()

    def handle(self, record: Record, now: float) -> Sequence[Record]:
        if isinstance(record, ExecBatch):
            return [classify_execs(record, self.last, self.meter, self.providers)]
        assert isinstance(record, Round)  # noqa: S101 - the runner checks `accepts`
        return [classify_round(record, self.meter, self.providers, self.last)]
