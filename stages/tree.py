"""The tree stage's logic: merge the shards of a round into one."""

from __future__ import annotations

from collections.abc import Sequence

from stages.base.catalog import (
    RECORDS_REFUSED,
    TREE_LATE_SHARDS,
    TREE_MISSING_SHARDS,
    TREE_SHARD_MISSING_ROUNDS,
)
from stages.base.contract import Stage
from stages.base.meter import Meter
from stages.base.schema import RawProcess, Record, Round, ShardScan
from stages.parts import complete_shards

MAX_SHARDS = 64  # scan.shards is at most this
# How far ahead of the wall clock a round id may be (clocks of separate hosts differ a
# little): this many rounds, and at least this many seconds.
AHEAD_ROUNDS = 3
AHEAD_SECONDS = 5.0


def merge(round_id: int, shards: Sequence[ShardScan], expected: int) -> Round:
    """One round from the shards that came; the ones that did not are listed as missing.

    ``shards`` may hold several parts of a shard (``stages.parts``): a shard whose parts
    did not all come is listed as missing, and the processes of the parts that did are kept.
    A pid reported twice (two shards configured with the same number) is kept once.
    """
    by_pid: dict[int, RawProcess] = {}
    for shard in shards:
        for proc in shard.procs:
            by_pid.setdefault(proc.pid, proc)
    came = complete_shards(shards)
    proc_root = shards[0].proc_root if shards else ""
    return Round(
        round_id=round_id,
        proc_root=proc_root,
        procs=[by_pid[pid] for pid in sorted(by_pid)],
        missing_shards=[k for k in range(expected) if k not in came],
        started=min((s.started for s in shards), default=0.0),
    )


class TreeStage(Stage):
    """Collects the shards of each round and emits the round when all have come, or when
    ``grace`` has passed since its first shard (the missing ones are counted). Rounds are
    emitted in order; a shard of a round already emitted is late and counted.

    Rounds are numbered ``time // interval`` by the scan shards. A shard no real scan sends
    is refused and counted (``procsmith_stage_records_refused_total{stage="tree"}``) before
    it can change anything: a round id far ahead of the clock (``round_ahead``: adopted, it
    would make every later real round "late" for good) and shard numbers out of range
    (``bad_shard``: a count of 2**40 shards would be listed as missing). ``interval`` None
    leaves the round clock unchecked (unit tests of the merge).
    """

    accepts = (ShardScan,)

    def __init__(
        self, shards: int, grace: float, meter: Meter, *, interval: float | None = None
    ) -> None:
        self.shards = shards
        self.grace = grace
        self.meter = meter
        self.interval = interval
        self._pending: dict[int, list[ShardScan]] = {}
        self._first_seen: dict[int, float] = {}
        self._emitted_upto = -1
        self._missing_streak: dict[int, int] = {}  # shard → consecutive rounds without it

    def handle(self, record: Record, now: float) -> Sequence[Record]:
        assert isinstance(record, ShardScan)  # noqa: S101 - the runner checks `accepts`
        refused = self._refusal(record, now)
        if refused is not None:
            self.meter.inc(RECORDS_REFUSED, stage="tree", reason=refused)
            return ()
        if record.round_id <= self._emitted_upto:
            self.meter.inc(TREE_LATE_SHARDS)
            return ()
        shards = self._pending.setdefault(record.round_id, [])
        self._first_seen.setdefault(record.round_id, now)
        if all((s.shard, s.part) != (record.shard, record.part) for s in shards):
            shards.append(record)
        if len(complete_shards(shards)) >= max(self.shards, record.shards):
            return self._emit_upto(record.round_id)
        return ()

    def _refusal(self, record: ShardScan, now: float) -> str | None:
        if not (1 <= record.shards <= MAX_SHARDS and 0 <= record.shard < record.shards):
            return "bad_shard"
        if self.interval is not None:
            ahead = max(AHEAD_ROUNDS * self.interval, AHEAD_SECONDS)
            if record.round_id > (now + ahead) // self.interval:
                return "round_ahead"
        return None

    def next_tick(self, now: float) -> float | None:
        if not self._first_seen:
            return None
        return min(self._first_seen.values()) + self.grace

    def tick(self, now: float) -> Sequence[Record]:
        due = [r for r, t in self._first_seen.items() if t + self.grace <= now]
        return self._emit_upto(max(due)) if due else ()

    def finish(self, now: float) -> Sequence[Record]:
        return self._emit_upto(max(self._pending)) if self._pending else ()

    def _emit_upto(self, round_id: int) -> list[Record]:
        out: list[Record] = []
        for rid in sorted(r for r in self._pending if r <= round_id):
            shards = self._pending.pop(rid)
            del self._first_seen[rid]
            expected = max(self.shards, *(s.shards for s in shards))
            rnd = merge(rid, shards, expected)
            if rnd.missing_shards:
                self.meter.inc(TREE_MISSING_SHARDS, len(rnd.missing_shards))
            self._count_streaks(expected, rnd.missing_shards)
            out.append(rnd)
        self._emitted_upto = round_id
        return out

    def _count_streaks(self, expected: int, missing: Sequence[int]) -> None:
        """Per shard, how many rounds in a row were built without it (the health check
        calls a shard missing from ``supervisor.shard_missing_rounds`` of them unhealthy)."""
        for k in range(expected):
            streak = self._missing_streak.get(k, 0) + 1 if k in missing else 0
            if streak != self._missing_streak.get(k):
                self._missing_streak[k] = streak
                self.meter.set(TREE_SHARD_MISSING_ROUNDS, streak, shard=str(k))
