"""Records from a peer cannot move a stage into a state that refuses later real input
(issue #12): the tree and filter stages as plain objects, fed what no real peer sends."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stages.base.catalog import RECORDS_REFUSED, TREE_LATE_SHARDS
from stages.base.meter import Tally
from stages.base.schema import Judged, Kind, Process, RawProcess, Round, ShardScan, Workloads
from stages.filter import FilterStage, SeenFilter
from stages.tree import TreeStage

INTERVAL = 2.0
NOW = 1_000_000.0  # round NOW // INTERVAL is the real one


def shard(round_id: int, k: int = 0, shards: int = 1) -> ShardScan:
    return ShardScan(round_id, k, shards, "/proc", [RawProcess(5, 1, 7, "c", ["x"])])


def tree_stage(tally: Tally) -> TreeStage:
    return TreeStage(1, grace=1.0, meter=tally, interval=INTERVAL)


def test_a_round_id_far_ahead_is_refused_and_real_rounds_go_on(tally: Tally) -> None:
    tree = tree_stage(tally)
    real = int(NOW // INTERVAL)
    for forged in (2**62, 2**63 - 1, real + 10_000):
        assert tree.handle(shard(forged), NOW) == ()
    assert tally.get(RECORDS_REFUSED, stage="tree", reason="round_ahead") == 3
    for n in range(3):
        (rnd,) = tree.handle(shard(real + n), NOW + n * INTERVAL)
        assert isinstance(rnd, Round) and rnd.round_id == real + n
    assert tally.get(TREE_LATE_SHARDS) == 0
    # A little ahead (another host's clock) is still taken.
    assert len(tree.handle(shard(real + 4), NOW + 3 * INTERVAL)) == 1


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_no_round_id_stops_the_next_real_round(forged: int) -> None:
    tally = Tally()
    tree = tree_stage(tally)
    tree.handle(shard(forged), NOW)
    tree.tick(NOW + 5)  # whatever was pending is emitted by now
    real = int((NOW + 10) // INTERVAL)
    out = tree.handle(shard(real), NOW + 10)
    assert [r.round_id for r in out if isinstance(r, Round)] == [real]
    assert len(out) == 1


def test_impossible_shard_numbers_are_refused(tally: Tally) -> None:
    tree = tree_stage(tally)
    real = int(NOW // INTERVAL)
    for k, n in ((0, 2**40), (0, 0), (-1, 1), (3, 2), (0, 65)):
        assert tree.handle(shard(real, k, n), NOW) == ()
    assert tally.get(RECORDS_REFUSED, stage="tree", reason="bad_shard") == 5
    assert len(tree.handle(shard(real), NOW)) == 1


def proc(pid: int) -> Process:
    return Process(pid, 1, 100, 0, f"/proc/{pid}/exe", ["x"], Kind.USER_WORKLOAD)


def test_a_verdict_for_a_process_never_handed_on_is_not_taken(tally: Tally) -> None:
    f = FilterStage(SeenFilter(10, tally), tally, ack_timeout=60, max_attempts=3)
    for pid in range(1000, 1100):  # a flood of forged verdicts: none enters the LRU
        assert f.handle(Judged(proc(pid), "clean"), now=0) == ()
    assert len(f.seen) == 0
    assert tally.get(RECORDS_REFUSED, stage="filter", reason="not_handed_on") == 100
    out = f.handle(Workloads(1, [proc(1)]), now=1)
    assert out[0] == proc(1)
    f.sent(proc(1), now=1)
    f.handle(Judged(proc(1), "clean"), now=2)
    f.handle(Judged(proc(1), "clean"), now=3)  # a second verdict for a seen one is harmless
    assert proc(1) in f.seen
    assert tally.get(RECORDS_REFUSED, stage="filter", reason="not_handed_on") == 100
