"""The tree stage's logic: merge the shards of a round, and index processes by pid."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pipeline.schema import RawProcess, Round, ShardScan


def merge(round_id: int, shards: Sequence[ShardScan], expected: int) -> Round:
    """One round from the shards that came; the ones that did not are listed as missing.

    A pid reported twice (two shards configured with the same number) is kept once.
    """
    by_pid: dict[int, RawProcess] = {}
    for shard in shards:
        for proc in shard.procs:
            by_pid.setdefault(proc.pid, proc)
    came = {s.shard for s in shards}
    proc_root = shards[0].proc_root if shards else ""
    return Round(
        round_id=round_id,
        proc_root=proc_root,
        procs=[by_pid[pid] for pid in sorted(by_pid)],
        missing_shards=[k for k in range(expected) if k not in came],
    )


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
