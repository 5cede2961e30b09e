"""The scan stage: a shard reader (``stages.shardreader``) run once per round, at a random
phase within its interval, its round handed on in bounded parts."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from stages.base.catalog import SCAN_TRUNCATED
from stages.base.contract import Stage
from stages.base.schema import Record
from stages.parts import split, within_argv_budget
from stages.shardreader import RECHECK_SECONDS, ShardReader

# However many processes share a round's argv budget, each keeps this much of its argv (a
# miner's pool argument is no further in than that; what is cut is counted).
ARGV_FLOOR = 4096


def random_fraction() -> float:
    """A fraction in [0, 1) from the kernel's random bytes (nothing a process can observe)."""
    return int.from_bytes(os.urandom(4), "little") / 2**32


class ScanStage(Stage):
    """A source: reads its shard once per round. Rounds are numbered by wall-clock interval
    (``round_id = time // interval``), so separate shard processes agree on them without
    talking; the first round starts at once. A round goes out in parts of at most
    ``message_bytes`` (see ``split``), its argv cut to ``round_argv_bytes`` (this shard's
    share of a round's argv budget) in all.

    Round ``r`` starts at a random phase within its interval, ``r * interval + phase``, drawn
    afresh for every round and by every shard on its own (``phase`` returns a fraction in
    [0, 1)): a process that knows the interval cannot live between two rounds by knowing when
    they start. Rounds of two shards can then start up to an interval apart; the tree's wait
    for a round's shards covers that (``pipeline.builders``)."""

    def __init__(
        self,
        reader: ShardReader,
        interval: float,
        message_bytes: int = 4 << 20,
        round_argv_bytes: int = 32 << 20,
        phase: Callable[[], float] = random_fraction,
    ) -> None:
        self.reader = reader
        self.interval = interval
        self.message_bytes = message_bytes
        self.round_argv_bytes = round_argv_bytes
        self._draw = phase
        self._last: int | None = None
        self._phase: tuple[int, float] = (-1, 0.0)
        reader.set_recheck(max(1, int(RECHECK_SECONDS / interval)))

    def _start_of(self, round_id: int) -> float:
        if self._phase[0] != round_id:
            # Kept clear of the interval's end, so the start is still inside round_id.
            fraction = min(max(self._draw(), 0.0), 0.999)
            self._phase = (round_id, fraction * self.interval)
        return round_id * self.interval + self._phase[1]

    def next_tick(self, now: float) -> float:
        if self._last is None:
            return now
        current = int(now // self.interval)
        if current > self._last:  # this interval's round has not run: at its phase
            return max(now, self._start_of(current))
        return self._start_of(current + 1)

    def tick(self, now: float) -> Sequence[Record]:
        self._last = int(now // self.interval)
        scan, cut = within_argv_budget(
            self.reader.read(self._last), self.round_argv_bytes, ARGV_FLOOR
        )
        if cut:
            self.reader.meter.inc(SCAN_TRUNCATED, cut, file="round_argv")
        return split(scan, self.message_bytes)

    def close(self) -> None:
        self.reader.close()
