"""The LRU filter: D7 (seen only when marked) and D8 (the key)."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from stages.base.catalog import (
    CACHE_USE,
    FILTER_GAVE_UP,
    FILTER_RETRIES,
    ROUND_COMPLETED,
    ROUND_DURATION,
    ROUNDS,
)
from stages.base.meter import Tally
from stages.base.schema import Filtered, Judged, Kind, Process, Record, Workloads
from stages.filter import FilterStage, SeenFilter


def proc(pid: int, starttime: int = 100, ppid: int = 1, dev: int = 8, ino: int = 1) -> Process:
    return Process(
        pid,
        ppid,
        starttime,
        0,
        f"/proc/{pid}/exe",
        ["x"],
        Kind.USER_WORKLOAD,
        exe_dev=dev,
        exe_ino=ino,
    )


def test_unseen_does_not_remember(tally: Tally) -> None:
    f = SeenFilter(10, tally)
    assert f.unseen([proc(1)]) == [proc(1)]
    assert f.unseen([proc(1)]) == [proc(1)]  # D7: dropped work is offered again
    f.mark_seen(proc(1))
    assert f.unseen([proc(1), proc(2)]) == [proc(2)]
    assert tally.get(CACHE_USE, use="miss") == 3
    assert tally.get(CACHE_USE, use="hit") == 1


def test_key_is_identity_plus_executable(tally: Tally) -> None:
    f = SeenFilter(10, tally)
    f.mark_seen(proc(1))
    assert f.unseen([proc(1, ppid=99)]) == []  # re-parented: same process
    assert f.unseen([proc(1, starttime=101)]) != []  # pid reused
    assert f.unseen([proc(1, ino=2)]) != []  # exec'd another binary
    assert f.unseen([proc(1, dev=9)]) != []


def maps(p: Process, maps_id: int) -> Process:
    return msgspec.structs.replace(p, maps_id=maps_id)


def test_mappings_count_as_judged_as_match_read_them(tally: Tally) -> None:
    f = SeenFilter(10, tally)
    handed = proc(1)  # the scan's first read: maps not read (0)
    assert f.unseen([handed]) == [handed]
    f.handed_on(handed, 0.0)
    assert f.judged(maps(handed, 7))  # match read maps of digest 7 as it judged
    assert f.unseen([handed, maps(handed, 7)]) == []  # not read yet, or as judged
    assert f.unseen([maps(handed, 8)]) == [maps(handed, 8)]  # a dlopen since: judged again
    f.handed_on(maps(handed, 8), 1.0)
    assert f.judged(maps(handed, 9))  # and once more between the scan's read and match's
    # The scan reports 8 until it reads them again, match said 9: both judged, 7 no more.
    assert f.unseen([maps(handed, 8), maps(handed, 9), handed]) == []
    assert f.unseen([maps(handed, 7)]) == [maps(handed, 7)]


def test_a_repeated_verdict_keeps_what_was_handed_on(tally: Tally) -> None:
    f = SeenFilter(10, tally)
    handed = maps(proc(1), 5)
    f.handed_on(handed, 0.0)
    assert f.judged(maps(handed, 6))
    assert f.judged(maps(handed, 7))  # the verdict of a retry, after the first
    assert f.unseen([handed, maps(handed, 7)]) == []


def test_lru_evicts_least_recent(tally: Tally) -> None:
    f = SeenFilter(2, tally)
    f.mark_seen(proc(1))
    f.mark_seen(proc(2))
    assert f.unseen([proc(1)]) == []  # a hit refreshes 1
    f.mark_seen(proc(3))  # evicts 2
    assert len(f) == 2
    assert f.unseen([proc(1), proc(2), proc(3)]) == [proc(2)]


def test_records_round_trip_msgpack() -> None:
    p = proc(7)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(p), type=Process) == p


def stage(tally: Tally, *, timeout: float = 10.0, attempts: int = 3) -> FilterStage:
    return FilterStage(SeenFilter(100, tally), tally, ack_timeout=timeout, max_attempts=attempts)


def round_of(*procs: Process) -> Workloads:
    return Workloads(1, list(procs))


def handed_on(records: Sequence[Record]) -> list[Record]:
    """What the filter sent on to match (without its per-round ``Filtered`` record)."""
    return [r for r in records if isinstance(r, Process)]


def test_each_round_ends_with_what_the_filter_made_of_it(tally: Tally) -> None:
    f = stage(tally)
    out = f.handle(Workloads(7, [proc(1), proc(2)], started=100.0), now=101)
    assert out[-1] == Filtered(7, 100.0, workloads=2, handed_on=2)
    f.sent(out[0], now=101)  # match took process 1; process 2 was dropped (D7)
    again = f.handle(Workloads(8, [proc(1), proc(2)], started=102.0), now=103)
    assert again == [proc(2), Filtered(8, 102.0, workloads=2, handed_on=1)]


def test_handover_completes_when_the_verdict_comes_back(tally: Tally) -> None:
    f = stage(tally)
    assert handed_on(f.handle(round_of(proc(1), proc(2)), now=0)) == [proc(1), proc(2)]
    f.sent(proc(1), now=0)
    f.dropped(proc(2), now=0)
    # 1 awaits its verdict (a hit); 2 was dropped, so it is offered again (D7).
    assert handed_on(f.handle(round_of(proc(1), proc(2)), now=1)) == [proc(2)]
    assert f.seen.inflight == 1 and proc(1) not in f.seen
    assert f.handle(Judged(proc(1), "clean"), now=2) == ()
    assert f.seen.inflight == 0 and proc(1) in f.seen
    assert handed_on(f.handle(round_of(proc(1)), now=3)) == []


def test_overdue_is_sent_again_even_after_the_process_is_gone(tally: Tally) -> None:
    """A match process died with it: the filter sends it again from its own table, and match
    will say `vanished` — a verdict — rather than the process never being judged."""
    f = stage(tally, timeout=10, attempts=3)
    f.handle(round_of(proc(1)), now=0)
    f.sent(proc(1), now=0)
    assert handed_on(f.handle(round_of(), now=5)) == []  # not overdue yet
    assert handed_on(f.handle(round_of(), now=10)) == [proc(1)]  # overdue; gone from the round
    f.sent(proc(1), now=10)
    assert tally.get(FILTER_RETRIES) == 1
    assert f.handle(Judged(proc(1), "vanished"), now=11) == ()
    assert f.seen.inflight == 0 and proc(1) in f.seen


def test_given_up_after_max_attempts(tally: Tally) -> None:
    f = stage(tally, timeout=1, attempts=2)
    f.handle(round_of(proc(1)), now=0)
    f.sent(proc(1), now=0)
    assert handed_on(f.handle(round_of(proc(1)), now=1)) == [proc(1)]
    f.sent(proc(1), now=1)  # the second and last send
    assert handed_on(f.handle(round_of(proc(1)), now=2)) == []
    assert tally.get(FILTER_GAVE_UP) == 1
    assert proc(1) in f.seen and f.seen.inflight == 0


def test_a_dropped_retry_is_tried_again_without_costing_an_attempt(tally: Tally) -> None:
    f = stage(tally, timeout=1, attempts=2)
    f.handle(round_of(), now=0)
    f.handle(round_of(proc(1)), now=0)
    f.sent(proc(1), now=0)
    for now in (1, 2, 3):  # match's queue stays full: every retry is dropped
        assert handed_on(f.handle(round_of(), now=now)) == [proc(1)]
        f.dropped(proc(1), now=now)
    assert tally.get(FILTER_GAVE_UP) == 0
    f.sent(proc(1), now=4)
    assert handed_on(f.handle(round_of(), now=5)) == []  # two sends: given up now
    assert tally.get(FILTER_GAVE_UP) == 1


def test_a_late_verdict_after_a_retry_is_harmless(tally: Tally) -> None:
    f = stage(tally, timeout=1)
    f.handle(round_of(proc(1)), now=0)
    f.sent(proc(1), now=0)
    f.handle(round_of(), now=1)
    f.sent(proc(1), now=1)
    for _ in range(2):  # both verdicts arrive
        assert f.handle(Judged(proc(1), "clean"), now=2) == ()
    assert f.seen.inflight == 0 and len(f.seen) == 1


def test_round_metrics(tally: Tally) -> None:
    f = stage(tally)
    f.handle(Workloads(1, [], started=100.0), now=102.5)
    assert tally.get(ROUNDS) == 1
    assert tally.get(ROUND_COMPLETED) == 102.5
    assert tally.observations[(ROUND_DURATION, ())] == [2.5]
