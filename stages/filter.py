"""The filter stage's logic: pass each user workload on only once (LRU), and make sure each
one handed on is judged (at-least-once)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

import msgspec

from stages.base.catalog import (
    CACHE_USE,
    FILTER_GAVE_UP,
    FILTER_INFLIGHT,
    FILTER_RETRIES,
    RECORDS_REFUSED,
    ROUND_COMPLETED,
    ROUND_DURATION,
    ROUNDS,
)
from stages.base.contract import Stage
from stages.base.meter import Meter
from stages.base.schema import ExecWorkloads, Filtered, Judged, Process, Record, Workloads
from stages.fairqueue import interleave

# D8: the process identity plus its executable. No ppid, so re-parenting (the parent died)
# is not a new process; the executable's device and inode, so an exec is.
# D10: and what it runs now: its exec generation (every exec, even of the same binary) and a
# digest of its argv (rewritten in place). Its executable mappings are compared apart from
# the key (``_Seen``): the scan reads them late, and match says which it judged.
SeenKey = tuple[int, int, int, int, int, int]


def seen_key(proc: Process) -> SeenKey:
    # hash() of the argv: this process's own (salted) string hashes, which is all the LRU,
    # held in this process only, needs; no copy of a 256 KiB argv is kept in the key.
    argv = hash((proc.argv_bytes, *proc.cmdline))
    return (proc.pid, proc.starttime, proc.exe_dev, proc.exe_ino, proc.exec_id, argv)


class _Seen(msgspec.Struct, gc=False):
    """A judged process: the round it was last seen in, and the two digests of its mappings
    that count as judged (``maps_id``): the one the record handed on carried, and the one of
    the maps match read as it judged (often newer: the scan reads them late)."""

    round: int
    handed: int
    judged: int

    def covers(self, maps_id: int) -> bool:
        """0 is maps not read: nothing says they changed since the judgement."""
        return maps_id in (0, self.judged, self.handed)


class SeenFilter:
    """An LRU of processes already judged, and the ones handed on awaiting their verdict.

    D7: ``unseen`` does not remember anything. The caller says what became of each process:
    ``mark_seen`` (judged, or handed on where nothing acknowledges), or ``handed_on`` then
    ``judged`` when the verdict comes back. A process dropped under back-pressure is simply
    not marked, so it is offered again next round. One handed on whose verdict does not come
    back (its match process died) is sent again from here, see ``overdue``.

    Eviction passes over processes seen in the current round: evicting a process that still
    runs only means judging it (and penalising it) again next round, forever, once a node
    has more workload processes than ``capacity`` (the reference's behaviour). So the LRU
    holds every live process it has judged, plus up to ``capacity`` that have gone.
    """

    def __init__(self, capacity: int, meter: Meter) -> None:
        if capacity < 1:
            raise ValueError("the LRU needs room for at least one process")
        self.capacity = capacity
        self.meter = meter
        # key → when it was last seen and what it was judged with; least recently seen first.
        self._seen: OrderedDict[SeenKey, _Seen] = OrderedDict()
        self._round = 0
        # Handed on, verdict awaited: the record, when it was last sent, how often it was sent.
        self._inflight: dict[SeenKey, tuple[Process, float, int]] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, proc: Process) -> bool:
        seen = self._seen.get(seen_key(proc))
        return seen is not None and seen.covers(proc.maps_id)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def unseen(self, procs: Iterable[Process], *, partial: bool = False) -> list[Process]:
        """The processes neither judged nor awaiting a verdict; hits refresh the LRU. Each call
        is a new round, unless ``partial``: processes read at their exec are not a round, and
        must not age the live processes they leave out into evictable ones.

        A process awaiting its verdict counts as a hit: it has been handed on.
        """
        if not partial:
            self._round += 1
        fresh = []
        hits = 0
        seen_of, now = self._seen.get, self._round
        for proc in procs:
            key = seen_key(proc)
            seen = seen_of(key)
            if seen is not None and seen.covers(proc.maps_id):
                seen.round = now
                self._seen.move_to_end(key)
                hits += 1
            elif key in self._inflight:
                hits += 1
            else:
                fresh.append(proc)
        if hits:
            self.meter.inc(CACHE_USE, hits, use="hit")
        if fresh:
            self.meter.inc(CACHE_USE, len(fresh), use="miss")
        return fresh

    def mark_seen(self, proc: Process, handed: int | None = None) -> None:
        """``proc`` is judged with its ``maps_id``, and with ``handed``, the one the record
        handed on carried (if another)."""
        key = seen_key(proc)
        judged = proc.maps_id
        self._seen[key] = _Seen(self._round, judged if handed is None else handed, judged)
        self._seen.move_to_end(key)
        while len(self._seen) > self.capacity:
            if next(iter(self._seen.values())).round >= self._round:
                break  # the least recent still runs, and so does everything after it
            self._seen.popitem(last=False)

    def handed_on(self, proc: Process, now: float) -> None:
        key = seen_key(proc)
        sends = self._inflight[key][2] + 1 if key in self._inflight else 1
        self._inflight[key] = (proc, now, sends)

    def judged(self, proc: Process) -> bool:
        """Its verdict came back (perhaps after it was offered again): it is seen. A verdict
        for a process never handed on (neither awaited nor seen) is not taken: False."""
        key = seen_key(proc)
        # Match answers with the digest of the maps it read (stages.match); the one handed
        # on is kept too, for the scan still reports it until it reads the maps again.
        sent = self._inflight.pop(key, None)
        if sent is not None:
            handed = sent[0].maps_id
        elif (before := self._seen.get(key)) is not None:
            handed = before.handed  # a verdict again, for a process already seen
        else:
            return False
        self.mark_seen(proc, handed)
        return True

    def overdue(self, now: float, timeout: float, max_attempts: int) -> tuple[list[Process], int]:
        """Processes sent ``timeout`` ago or longer without a verdict, to be sent again —
        whether or not they still run (match then says ``vanished``, which is a verdict).
        One sent ``max_attempts`` times is given up: marked seen, counted.
        Returns (to send again, given up)."""
        again = []
        gave_up = 0
        for key, (proc, sent, sends) in list(self._inflight.items()):
            if now - sent < timeout:
                continue
            if sends >= max_attempts:
                del self._inflight[key]
                self.mark_seen(proc)
                gave_up += 1
            else:
                again.append(proc)  # stays in flight: if this send is dropped, next round
        return again, gave_up


class FilterStage(Stage):
    """Workloads in, new processes out (one record each, so match replicas share them);
    ``Judged`` verdicts from match come in on the same socket and complete the handover."""

    accepts = (Workloads, Judged, ExecWorkloads)

    def __init__(
        self, seen: SeenFilter, meter: Meter, *, ack_timeout: float, max_attempts: int
    ) -> None:
        self.seen = seen
        self.meter = meter
        self.ack_timeout = ack_timeout
        self.max_attempts = max_attempts

    def handle(self, record: Record, now: float) -> Sequence[Record]:
        if isinstance(record, Judged):
            # Only a verdict on what this filter handed on: others would grow the LRU
            # without bound within a round (none of them is ever evicted while it is new).
            if not self.seen.judged(record.process):
                self.meter.inc(RECORDS_REFUSED, stage="filter", reason="not_handed_on")
            self.meter.set(FILTER_INFLIGHT, self.seen.inflight)
            return ()
        if isinstance(record, ExecWorkloads):
            # Not a round: no round counted, no Filtered record, the LRU's round unchanged.
            return self.seen.unseen(record.procs, partial=True)
        assert isinstance(record, Workloads)  # noqa: S101 - the runner checks `accepts`
        again, gave_up = self.seen.overdue(now, self.ack_timeout, self.max_attempts)
        if again:
            self.meter.inc(FILTER_RETRIES, len(again))
        if gave_up:
            self.meter.inc(FILTER_GAVE_UP, gave_up)
        # In turns by workspace: when match has room for only some, not all one workspace's;
        # new processes before ones offered again (match still holds most of those queued).
        fresh: list[Record] = [*interleave([*self.seen.unseen(record.procs), *again])]
        self.meter.inc(ROUNDS)
        self.meter.set(ROUND_COMPLETED, now)
        if record.started:
            self.meter.observe(ROUND_DURATION, max(0.0, now - record.started))
        # Last, after the processes: on the tap it says the round is through the filter.
        fresh.append(Filtered(record.round_id, record.started, len(record.procs), len(fresh)))
        return fresh

    def sent(self, record: Record, now: float) -> None:
        if isinstance(record, Process):
            self.seen.handed_on(record, now)
            self.meter.set(FILTER_INFLIGHT, self.seen.inflight)
