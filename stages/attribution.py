"""Classify processes read at their exec against the last full round (issue 10).

Events carry single processes, not a tree. What classify knows of the tree is its last full
round (a poll round, or the events stage's full read after a loss): every process inside a
workspace, with its starttime, kind and workspace. An exec'd process is attributed by the
nearest process on its chain — itself, then its parent, grandparent … (``ExecBatch.ancestry``,
each with its starttime, so a reused pid is not taken for the process the round saw) — that
the round knows:

- itself, inside a workspace: its kind there (a user workload that exec'd another program is
  judged again; the workspace's supervisor or sandbox is not a workload);
- an ancestor inside a workspace: a ``user_workload`` of that workspace (SPEC §1: inside a
  workspace everything but its supervisor is a user workload, D6);
- none: outside every workspace the last round knew. A workspace started since that round is
  found by the next one (a poll round, whose interval is the bound).
"""

from __future__ import annotations

from stages.base.schema import Kind, RawProcess, Workspace


class LastRound:
    """What the last full round said of the processes inside workspaces."""

    def __init__(self) -> None:
        self.inside: dict[int, tuple[int, Kind, Workspace]] = {}

    def update(self, inside: dict[int, tuple[Kind, Workspace]], procs: dict[int, int]) -> None:
        """``inside`` from the classification; ``procs`` pid → starttime of the round."""
        self.inside = {
            pid: (procs[pid], kind, ws) for pid, (kind, ws) in inside.items() if pid in procs
        }

    def attribute(
        self, proc: RawProcess, ancestry: list[tuple[int, int]]
    ) -> tuple[Kind, Workspace] | None:
        """The kind and workspace of an exec'd process; ``None`` outside every workspace."""
        entry = self.inside.get(proc.pid)
        if entry is not None and entry[0] == proc.starttime:
            _, kind, ws = entry
            return (kind, ws) if kind is Kind.USER_WORKLOAD else None
        for pid, starttime in ancestry:
            entry = self.inside.get(pid)
            if entry is not None and entry[0] == starttime:
                return Kind.USER_WORKLOAD, entry[2]
        return None
