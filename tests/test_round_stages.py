"""The tree and scan stages as plain objects: the round clock, and how shards become rounds."""

from __future__ import annotations

import msgspec

from pipeline.builders import tree_grace
from pipeline.config import load_config
from simulation.fakeproc import FakeProcfs
from stages.base.catalog import TREE_LATE_SHARDS, TREE_MISSING_SHARDS
from stages.base.meter import Tally
from stages.base.schema import RawProcess, Round, ShardScan
from stages.scan import ScanStage
from stages.shardreader import ShardReader
from stages.tree import TreeStage


def shard(round_id: int, k: int, *pids: int, started: float = 100.0) -> ShardScan:
    procs = [RawProcess(p, 1, 1000 + p, "c", ["x"]) for p in pids]
    return ShardScan(round_id, k, 2, "/proc", procs, started=started)


def rounds(records: object) -> list[Round]:
    assert isinstance(records, list | tuple)
    assert all(isinstance(r, Round) for r in records)
    return list(records)


def test_a_round_is_emitted_when_every_shard_has_come(tally: Tally) -> None:
    tree = TreeStage(2, grace=1.0, meter=tally)
    assert tree.handle(shard(7, 0, 4, 2), now=10.0) == ()
    assert tree.next_tick(10.0) == 11.0  # the grace deadline of round 7
    (rnd,) = rounds(tree.handle(shard(7, 1, 3, 1, started=99.0), now=10.2))
    assert [p.pid for p in rnd.procs] == [1, 2, 3, 4]
    assert (rnd.round_id, rnd.missing_shards, rnd.started) == (7, [], 99.0)
    assert tree.next_tick(10.2) is None


def test_a_late_shard_is_left_out_counted_and_refused_afterwards(tally: Tally) -> None:
    tree = TreeStage(2, grace=1.0, meter=tally)
    tree.handle(shard(7, 0, 2), now=10.0)
    assert tree.tick(10.5) == ()  # within the grace
    (rnd,) = rounds(tree.tick(11.0))
    assert (rnd.missing_shards, [p.pid for p in rnd.procs]) == ([1], [2])
    assert tally.get(TREE_MISSING_SHARDS) == 1
    assert tree.handle(shard(7, 1, 3), now=11.1) == ()  # its round is built already
    assert tally.get(TREE_LATE_SHARDS) == 1


def test_rounds_come_out_in_order(tally: Tally) -> None:
    """Round 8 completes while round 7 still waits for a shard: 7 goes out first, partial."""
    tree = TreeStage(2, grace=5.0, meter=tally)
    tree.handle(shard(7, 0, 2), now=10.0)
    tree.handle(shard(8, 0, 2), now=12.0)
    out = rounds(tree.handle(shard(8, 1, 3), now=12.1))
    assert [(r.round_id, r.missing_shards) for r in out] == [(7, [1]), (8, [])]


def test_a_shard_sent_twice_counts_once(tally: Tally) -> None:
    tree = TreeStage(2, grace=1.0, meter=tally)
    tree.handle(shard(7, 0, 2), now=10.0)
    assert tree.handle(shard(7, 0, 2), now=10.1) == ()  # the same shard again: still waiting
    (rnd,) = rounds(tree.handle(shard(7, 1, 3), now=10.2))
    assert [p.pid for p in rnd.procs] == [2, 3]


def test_what_the_tree_holds_goes_out_when_it_stops(tally: Tally) -> None:
    tree = TreeStage(2, grace=5.0, meter=tally)
    tree.handle(shard(7, 0, 2), now=10.0)
    (rnd,) = rounds(tree.finish(10.5))
    assert (rnd.round_id, rnd.missing_shards) == (7, [1])
    assert tree.finish(10.6) == ()


def test_scan_rounds_follow_the_wall_clock(fakeproc: FakeProcfs, tally: Tally) -> None:
    phases = iter([0.25, 0.5, 0.75])
    scan = ScanStage(
        ShardReader(str(fakeproc.root), tally), interval=2.0, phase=lambda: next(phases)
    )
    assert scan.next_tick(101.0) == 101.0  # the first round at once
    (first,) = scan.tick(101.0)
    assert isinstance(first, ShardScan) and first.round_id == 50
    assert [p.pid for p in first.procs] == [1]
    assert scan.next_tick(101.5) == 102.5  # then at its phase within the next interval
    (second,) = scan.tick(102.5)
    assert isinstance(second, ShardScan) and second.round_id == 51
    # A round that ran past its interval: the next interval's is due at its own phase...
    assert scan.next_tick(104.3) == 105.0
    # ...and at once when that has passed too, numbered by the clock.
    assert scan.next_tick(107.9) == 107.9
    (late,) = scan.tick(107.9)
    assert isinstance(late, ShardScan) and late.round_id == 53
    scan.close()


def test_round_starts_are_not_at_fixed_multiples(fakeproc: FakeProcfs, tally: Tally) -> None:
    """Each round starts at a fresh random phase of its interval (the kernel's random bytes),
    inside its own interval; two shards drawing their own phases agree on the round ids."""
    shards = [ScanStage(ShardReader(str(fakeproc.root), tally), interval=1.0) for _ in range(2)]
    starts: list[list[tuple[int, float]]] = [[], []]
    for k, scan in enumerate(shards):
        now = 1000.0
        scan.tick(now)
        for _ in range(40):
            now = scan.next_tick(now)
            (rec,) = scan.tick(now)
            assert isinstance(rec, ShardScan)
            starts[k].append((rec.round_id, now))
        scan.close()
    for rounds in starts:
        assert [r for r, _ in rounds] == list(range(1001, 1041))  # one per interval, in order
        assert all(r <= t < r + 1 for r, t in rounds)  # each inside its own interval
        phases = [t - r for r, t in rounds]
        assert len({round(p, 3) for p in phases}) > 30  # not one phase: not fixed multiples
        assert max(phases) - min(phases) > 0.5  # spread over the interval
    assert [r for r, _ in starts[0]] == [r for r, _ in starts[1]]
    assert [t for _, t in starts[0]] != [t for _, t in starts[1]]  # each shard its own phases


def test_the_tree_waits_an_interval_more_for_shards_that_start_at_random_phases() -> None:
    two = load_config(environ={"PROCSMITH_SCAN__INTERVAL": "3s", "PROCSMITH_TREE__GRACE": "1s"})
    assert tree_grace(two) == 4.0  # the shards' rounds may start up to an interval apart
    one = msgspec.structs.replace(two, scan=msgspec.structs.replace(two.scan, shards=1))
    assert tree_grace(one) == 1.0
