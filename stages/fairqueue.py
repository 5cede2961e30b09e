"""The processes waiting in a match replica, served fairly.

One workspace can hand match thousands of processes, or processes of an executable it keeps
touching so that every one of them is a cache miss and a full scan. Served in arrival order,
those would hold back every other workspace's judgement for as long as they last. Served
round-robin by workspace instead, with processes of an executable not seen before ahead of
ones already scanned, a workspace waits behind at most one scan per other busy workspace.
Each workspace may have ``per_workspace`` processes queued; one more is refused (the caller
leaves it unacknowledged, so the filter offers it again).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from stages.base.schema import Process

ExeKey = tuple[int, int]  # (device, inode) of the executable, as scan read it
_NO_WORKSPACE = ""


@dataclass
class _Lanes:
    fresh: deque[Process] = field(default_factory=deque)  # executables not scanned before
    repeat: deque[Process] = field(default_factory=deque)

    def __len__(self) -> int:
        return len(self.fresh) + len(self.repeat)


class FairQueue:
    def __init__(self, per_workspace: int = 1000, remembered: int = 4096) -> None:
        self.per_workspace = per_workspace
        self.remembered = remembered
        self._lanes: OrderedDict[str, _Lanes] = OrderedDict()  # next workspace served first
        self._queued: set[tuple[int, int]] = set()  # (pid, starttime) of what is queued
        self._judged_exes: OrderedDict[ExeKey, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._queued)

    def push(self, proc: Process) -> bool:
        """Queue ``proc``; False when its workspace already has its share queued. A process
        already queued (offered again while it waits) is not queued twice."""
        key = (proc.pid, proc.starttime)
        if key in self._queued:
            return True
        ws = proc.workspace.workspace_id if proc.workspace is not None else _NO_WORKSPACE
        lanes = self._lanes.get(ws)
        if lanes is None:
            lanes = self._lanes[ws] = _Lanes()
        elif len(lanes) >= self.per_workspace:
            return False
        exe = (proc.exe_dev, proc.exe_ino)
        (lanes.repeat if exe in self._judged_exes else lanes.fresh).append(proc)
        self._queued.add(key)
        return True

    def pop(self) -> Process | None:
        """The next process to judge: from the workspace whose turn it is."""
        if not self._lanes:
            return None
        ws, lanes = next(iter(self._lanes.items()))
        proc = lanes.fresh.popleft() if lanes.fresh else lanes.repeat.popleft()
        if lanes:
            self._lanes.move_to_end(ws)
        else:
            del self._lanes[ws]
        self._queued.discard((proc.pid, proc.starttime))
        exe = (proc.exe_dev, proc.exe_ino)
        if exe != (0, 0):
            self._judged_exes[exe] = None
            self._judged_exes.move_to_end(exe)
            if len(self._judged_exes) > self.remembered:
                self._judged_exes.popitem(last=False)
        return proc

    def workspaces(self) -> int:
        return len(self._lanes)
