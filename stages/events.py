"""The events stage's logic: every exec on the node, read the moment it happens.

A source beside the scan shards. The runner polls the connector's socket (``wake_fd``); on
each wake-up the stage takes what is queued (at most ``read_batch`` datagrams), reads every
exec'd process at once with ``stages.execread`` (stat, cmdline, executable identity, a ring1
candidate's environment), pins its executable (``stages.pins``) so match can judge it after
it has gone, and sends one ``ExecBatch`` to classify with each process's ancestry
(``stages.lineage``). Classify attributes them against its last full round.

Lost events are expected (ENOBUFS under a fork storm, the stage's restart): each
is counted and followed by a full read of procfs, sent as a ``complete`` batch. Full reads are
spaced by at least ``RESYNC_GAP`` and ten times the last one's duration (losses in between
share the one that follows them), so a storm of losses on a node of 150,000 processes costs
at most a tenth of a core. A batch classify's queue refused (it is behind) is counted as lost
but makes no full read, which would only add to its queue: the next poll round reads the
processes of that batch that still run. Where the connector is unavailable the stage says
so once (log and ``procsmith_events_available``) and idles: the poll rounds go on as before.

Pins are released ``pin_hold`` seconds after they were taken (match has judged the process
by then, or it is still running and read through its own ``exe``); the holder's bounds cap
what is held meanwhile, and what they push out is counted.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Final

from stages.base.catalog import (
    EVENTS_AVAILABLE,
    EVENTS_LOST,
    EVENTS_MALFORMED,
    EVENTS_PINS_HELD,
    EVENTS_PINS_OVERFLOW,
    EVENTS_READ_SKIPPED,
    EVENTS_RECEIVED,
    EVENTS_RESYNCS,
)
from stages.base.contract import Stage
from stages.base.meter import Meter
from stages.base.schema import ExecBatch, RawProcess, Record
from stages.cnproc import Event, Exec, Exit, Fork, Lost
from stages.execread import ExecProcess, ExecReader
from stages.lineage import Lineage
from stages.procevents import READ_DATAGRAMS, ProcEventSource, Unavailable

log = logging.getLogger("procsmith.events")

RESYNC_GAP: Final = 1.0  # seconds: at most one full read per second, however much is lost
RESYNC_SHARE: Final = 10.0  # and the gap is at least this many times the last read's duration
PIN_HOLD: Final = 10.0
LIVE: Final = "live"

FullRead = Callable[[], list[RawProcess]]
_KIND: dict[type, str] = {Exec: "exec", Fork: "fork", Exit: "exit"}


def raw_record(proc: ExecProcess) -> RawProcess:
    """The RawProcess of a read at exec (the pin kept as ``pin``)."""
    return RawProcess(
        proc.pid,
        proc.ppid,
        proc.starttime,
        proc.comm,
        proc.cmdline,
        proc.exe_dev,
        proc.exe_ino,
        proc.gitpod_env,
        pin=proc.exe_pin,
        exec_id=proc.exec_id,
        maps_id=proc.maps_id,
        argv_bytes=proc.argv_bytes,
        flags=proc.flags,
    )


class EventsStage(Stage):
    def __init__(
        self,
        source: ProcEventSource | Unavailable,
        reader: ExecReader,
        full_read: FullRead,
        meter: Meter,
        *,
        pin_hold: float = PIN_HOLD,
        read_batch: int = READ_DATAGRAMS,
        lost_at_start: str | None = "start",
        now: float = 0.0,
    ) -> None:
        self.reader = reader
        self.pins = reader.pins
        self.full_read = full_read
        self.meter = meter
        self.pin_hold = pin_hold
        self.read_batch = read_batch
        self.lineage = Lineage(reader.proc_root)
        self._expiry: deque[tuple[float, tuple[int, int]]] = deque()
        self._resync_at: float | None = None
        self._next_allowed = float("-inf")  # when the next full read may be made
        self._counted: dict[str, Counter[str]] = {"netlink": Counter(), "read": Counter()}
        self._overflow = {"evicted": 0, "refused": 0}
        if isinstance(source, Unavailable):
            self.source: ProcEventSource | None = None
            log.warning(
                "process events unavailable (%s: %s); discovery polls only",
                source.reason,
                source.detail,
            )
            meter.set(EVENTS_AVAILABLE, 0, reason=source.reason)
            return
        self.source = source
        meter.set(EVENTS_AVAILABLE, 1, reason=LIVE)
        log.info("process events live (netlink port %d)", source.port_id)
        # What happened before this process listened is unknown: after a restart (or a start
        # that cannot be told from one) that is a loss; ``None`` at a first start beside the
        # scan shards, whose first round is at once anyway.
        if lost_at_start is not None:
            self._lost(lost_at_start, now)

    def wake_fd(self) -> int | None:
        return None if self.source is None else self.source.fileno()

    def woken(self, now: float) -> Sequence[Record]:
        assert self.source is not None  # noqa: S101 - no wake_fd without a source
        try:
            events = self.source.read(self.read_batch)
        except OSError as err:
            log.warning("reading process events failed: %s", err)
            self._lost("error", now)
            events = []
        procs, ancestry = self._take(events, now)
        self._count()
        out: list[Record] = []
        if procs:
            out.append(ExecBatch(self.reader.proc_root, procs, ancestry, started=now))
        out.extend(self.tick(now))
        return out

    def _take(
        self, events: list[Event], now: float
    ) -> tuple[list[RawProcess], list[list[tuple[int, int]]]]:
        """Read each exec'd process, remember pids, forget exited ones, note losses."""
        procs: list[RawProcess] = []
        ancestry: list[list[tuple[int, int]]] = []
        kinds: Counter[str] = Counter()
        for event in events:
            if isinstance(event, Lost):
                self._lost(event.reason, now)
                continue
            kinds[_KIND.get(type(event), "other")] += 1
            if isinstance(event, Exit) and event.pid == event.tgid:
                self.lineage.forget(event.pid)
            if not isinstance(event, Exec) or event.pid != event.tgid:
                continue
            read = self.reader.read(event.pid, event.ts)
            if read is None:
                continue
            self.lineage.remember(read.pid, read.starttime, read.ppid)
            if read.exe_pin:
                self._expiry.append((now + self.pin_hold, (read.pid, read.starttime)))
            procs.append(raw_record(read))
            ancestry.append(self.lineage.chain(read.ppid))
        for kind, n in kinds.items():
            self.meter.inc(EVENTS_RECEIVED, n, kind=kind)
        return procs, ancestry

    def next_tick(self, now: float) -> float | None:
        pins = self._expiry[0][0] if self._expiry else None
        due = [t for t in (self._resync_at, pins) if t is not None]
        return min(due) if due else None

    def tick(self, now: float) -> Sequence[Record]:
        while self._expiry and self._expiry[0][0] <= now:
            self.pins.release(self._expiry.popleft()[1])
        self.meter.set(EVENTS_PINS_HELD, self.pins.held_files)
        if self._resync_at is None or self._resync_at > now:
            return ()
        self._resync_at = None
        self.meter.inc(EVENTS_RESYNCS)
        began = time.monotonic()
        procs = self.full_read()
        took = time.monotonic() - began
        self._next_allowed = now + max(RESYNC_GAP, RESYNC_SHARE * took)
        return [ExecBatch(self.reader.proc_root, procs, complete=True, started=now)]

    def dropped(self, record: Record, now: float) -> None:
        """Classify's queue was full: those execs are lost to it (counted; see the module's
        docstring for why no full read follows)."""
        if isinstance(record, ExecBatch):
            self.meter.inc(EVENTS_LOST, reason="dropped")

    def close(self) -> None:
        if self.source is not None:
            self.source.close()
        self.pins.close()

    def _lost(self, reason: str, now: float) -> None:
        self.meter.inc(EVENTS_LOST, reason=reason)
        self.lineage.clear()  # exits may have gone unseen: a remembered pid may be reused
        due = max(now, self._next_allowed)
        self._resync_at = due if self._resync_at is None else min(self._resync_at, due)

    def _count(self) -> None:
        """Report what the parser and the reader skipped since the last call."""
        assert self.source is not None  # noqa: S101
        for name, now_counts, metric in (
            ("netlink", self.source.skipped, EVENTS_MALFORMED),
            ("read", self.reader.skipped, EVENTS_READ_SKIPPED),
        ):
            before = self._counted[name]
            for reason, n in now_counts.items():
                if n > before[reason]:
                    self.meter.inc(metric, n - before[reason], reason=reason)
                    before[reason] = n
        for reason in ("evicted", "refused"):
            n = getattr(self.pins, reason)
            if n > self._overflow[reason]:
                self.meter.inc(EVENTS_PINS_OVERFLOW, n - self._overflow[reason], reason=reason)
                self._overflow[reason] = n
