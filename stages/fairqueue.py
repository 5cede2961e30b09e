"""The processes waiting in a match replica, served fairly.

One workspace can hand match thousands of processes, or processes of an executable it keeps
touching so that every one of them is a cache miss and a full scan. Served in arrival order,
those would hold back every other workspace's judgement for as long as they last. Served
round-robin by workspace instead, with processes of an executable not seen before ahead of
ones already scanned, a workspace waits behind at most one scan per other busy workspace.
At most ``limit`` processes wait in all (``match.queue``; match stops taking input there, so
the filter holds what it could not send, and offers again next round what it still held);
should more come, the workspace with the most queued gives way (its newest is refused), so
no workspace crowds out another. What is refused stays unacknowledged, and the filter offers
it again after ``filter.ack_timeout``.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from stages.base.schema import Process

ExeKey = tuple[int, int]  # (device, inode) of the executable, as scan read it
_NO_WORKSPACE = ""


@dataclass
class _Lanes:
    fresh: deque[Process] = field(default_factory=deque)  # executables not judged before
    repeat: deque[Process] = field(default_factory=deque)
    # Turns alternate between the oldest and the newest queued: a process started into a
    # workspace's backlog is judged soon, and the backlog still drains (a miner that forks
    # a flood after it started cannot push itself back for good, nor hide among new ones).
    newest_next: bool = False

    def __len__(self) -> int:
        return len(self.fresh) + len(self.repeat)

    def take(self, lane: deque[Process]) -> Process:
        return lane.pop() if self.newest_next else lane.popleft()


class FairQueue:
    def __init__(self, limit: int = 10_000, remembered: int = 4096) -> None:
        self.limit = limit
        self.remembered = remembered
        self._lanes: OrderedDict[str, _Lanes] = OrderedDict()  # next workspace served first
        self._queued: set[tuple[int, int]] = set()  # (pid, starttime) of what is queued
        self._judged_exes: OrderedDict[ExeKey, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._queued)

    def push(self, proc: Process) -> Process | None:
        """Queue ``proc``; returns the process refused to make room (``proc`` itself when
        its workspace has the most queued), or None. A process already queued (offered
        again while it waits) is not queued twice."""
        key = (proc.pid, proc.starttime)
        if key in self._queued:
            return None
        ws = _workspace(proc)
        refused = None
        if len(self._queued) >= self.limit:
            largest = max(self._lanes, key=lambda w: len(self._lanes[w]))
            if largest == ws or len(self._lanes[largest]) <= len(self._lanes.get(ws, ())):
                return proc
            refused = self._drop_newest(largest)
        lanes = self._lanes.get(ws)
        if lanes is None:
            lanes = self._lanes[ws] = _Lanes()
        exe = (proc.exe_dev, proc.exe_ino)
        (lanes.repeat if exe in self._judged_exes else lanes.fresh).append(proc)
        self._queued.add(key)
        return refused

    def _drop_newest(self, ws: str) -> Process:
        lanes = self._lanes[ws]
        proc = lanes.repeat.pop() if lanes.repeat else lanes.fresh.pop()
        if not lanes:
            del self._lanes[ws]
        self._queued.discard((proc.pid, proc.starttime))
        return proc

    def pop(self) -> Process | None:
        """The next process to judge: from the workspace whose turn it is, a process of an
        executable not judged yet if it has one (one queued before its executable was
        judged through another process moves back among the repeats here)."""
        while self._lanes:
            ws, lanes = next(iter(self._lanes.items()))
            proc = None
            while lanes.fresh:
                candidate = lanes.take(lanes.fresh)
                if (candidate.exe_dev, candidate.exe_ino) in self._judged_exes:
                    lanes.repeat.append(candidate)
                    continue
                proc = candidate
                break
            if proc is None:
                proc = lanes.take(lanes.repeat)
            lanes.newest_next = not lanes.newest_next
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
        return None

    def workspaces(self) -> int:
        return len(self._lanes)


def _workspace(proc: Process) -> str:
    return proc.workspace.workspace_id if proc.workspace is not None else _NO_WORKSPACE


def interleave(procs: Sequence[Process]) -> list[Process]:
    """``procs`` in turns by workspace (the first of each, then the second of each...), each
    workspace's in their order: what the filter hands on first, when match's queue has
    room only for some, is not all one workspace's."""
    by_ws: dict[str, deque[Process]] = {}
    for proc in procs:
        by_ws.setdefault(_workspace(proc), deque()).append(proc)
    if len(by_ws) < 2:
        return list(procs)
    out: list[Process] = []
    turns = list(by_ws.values())
    while turns:
        for queue in turns:
            out.append(queue.popleft())
        turns = [q for q in turns if q]
    return out
