"""The ancestry of an exec'd process: the (pid, starttime) of its parent, grandparent, ….

Process events carry pids only, and workspace membership is a matter of ancestry (SPEC §1,
Classify). The events stage sends each exec'd process with its chain of ancestors; classify
walks it up to the nearest one its last full round knows. The chain is read from procfs
(``<pid>/stat``: ppid and starttime) and remembered per pid, so a shell that runs a hundred
commands costs one walk; a pid is forgotten at its Exit event (its number may be reused), and
everything on a loss of events (exits may have gone unseen).

Bounds: at most ``max_depth`` ancestors per chain (a chain in procfs can be 100,000 deep, and
a workspace is rarely more than a dozen below pid 1), at most ``max_entries`` pids remembered
(the oldest forgotten first). A cycle ends the walk.

What it cannot see: a process whose parent exited before its read has been re-parented (to
init or a subreaper) and is attributed by its new parent, as a poll round would; and an
ancestor re-parented after it was remembered keeps its old parent here until it exits.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from stages.procfs import read_stat
from stages.statline import parse_stat

MAX_DEPTH: Final = 64
MAX_ENTRIES: Final = 65536


class Lineage:
    def __init__(
        self, proc_root: str, *, max_depth: int = MAX_DEPTH, max_entries: int = MAX_ENTRIES
    ) -> None:
        self.proc_root = proc_root
        self.max_depth = max_depth
        self.max_entries = max_entries
        # pid → (starttime, ppid), least recently remembered first
        self._known: OrderedDict[int, tuple[int, int]] = OrderedDict()
        self.reads = 0  # stat files read for chains (the rest came from memory)

    def __len__(self) -> int:
        return len(self._known)

    def remember(self, pid: int, starttime: int, ppid: int) -> None:
        self._known[pid] = (starttime, ppid)
        self._known.move_to_end(pid)
        while len(self._known) > self.max_entries:
            self._known.popitem(last=False)

    def forget(self, pid: int) -> None:
        self._known.pop(pid, None)

    def clear(self) -> None:
        self._known.clear()

    def chain(self, ppid: int) -> list[tuple[int, int]]:
        """(pid, starttime) from ``ppid`` upwards, pid 1 and the idle task left out; ends
        early where a process cannot be read."""
        out: list[tuple[int, int]] = []
        seen: set[int] = set()
        pid = ppid
        while pid > 1 and len(out) < self.max_depth and pid not in seen:
            seen.add(pid)
            entry = self._known.get(pid)
            if entry is None:
                entry = self._read(pid)
                if entry is None:
                    break
            out.append((pid, entry[0]))
            pid = entry[1]
        return out

    def _read(self, pid: int) -> tuple[int, int] | None:
        self.reads += 1
        try:
            stat = parse_stat(read_stat(f"{self.proc_root}/{pid}/stat"))
        except OSError:
            return None
        if stat is None:
            return None
        self.remember(pid, stat.starttime, stat.ppid)
        return stat.starttime, stat.ppid
