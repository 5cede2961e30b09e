"""A shard's round in bounded parts (issue 13): split by scan, put together by tree."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from stages.base.catalog import TREE_MISSING_SHARDS, TREE_SHARD_MISSING_ROUNDS
from stages.base.meter import Tally
from stages.base.schema import RawProcess, Round, ShardScan
from stages.parts import (
    argv_size,
    complete_shards,
    cut_argv,
    split,
    wire_size,
    within_argv_budget,
)
from stages.tree import TreeStage

procs_st = st.lists(
    st.builds(
        RawProcess,
        pid=st.integers(1, 1 << 22),
        ppid=st.integers(0, 1 << 22),
        starttime=st.integers(1, 1 << 40),
        comm=st.text(max_size=15),
        cmdline=st.lists(st.text(max_size=3000), max_size=5),
    ),
    max_size=60,
    unique_by=lambda p: p.pid,
)


@given(procs_st, st.integers(1, 20_000))
def test_split_keeps_every_process_in_order_within_the_budget(
    procs: list[RawProcess], budget: int
) -> None:
    scan = ShardScan(3, 1, 2, "/proc", procs, listed=len(procs) + 2, skipped={"vanished": 2})
    parts = split(scan, budget)
    assert [p for part in parts for p in part.procs] == procs
    assert [part.part for part in parts] == list(range(len(parts)))
    assert [part.last for part in parts] == [False] * (len(parts) - 1) + [True]
    for part in parts:
        assert len(part.procs) == 1 or sum(map(wire_size, part.procs)) <= budget
        # The estimate is an upper bound of what travels (characters are at most 4 bytes).
        assert len(msgspec.msgpack.encode(part.procs)) <= 4 * sum(map(wire_size, part.procs)) + 8
    assert parts[-1].listed == scan.listed and parts[-1].skipped == scan.skipped
    assert sum(p.listed for p in parts) == scan.listed
    assert complete_shards(parts) == {1}
    if len(parts) > 1:
        assert complete_shards(parts[1:]) == set()
        assert complete_shards(parts[:-1]) == set()


def big(pid: int) -> RawProcess:
    return RawProcess(pid, 1, 1000 + pid, "x", ["x" * 300_000])


def test_tree_waits_for_every_part_and_merges_them(tally: Tally) -> None:
    tree = TreeStage(2, grace=1.0, meter=tally)
    parts = split(ShardScan(7, 0, 2, "/proc", [big(2), big(4), big(6)]), 400_000)
    assert len(parts) == 3
    assert tree.handle(ShardScan(7, 1, 2, "/proc", [big(3)]), 10.0) == ()
    assert tree.handle(parts[2], 10.1) == ()  # the last part first: still two to come
    assert tree.handle(parts[0], 10.2) == ()
    (rnd,) = tree.handle(parts[1], 10.3)
    assert isinstance(rnd, Round)
    assert ([p.pid for p in rnd.procs], rnd.missing_shards) == ([2, 3, 4, 6], [])


def test_a_shard_with_a_part_lost_is_missing_and_its_streak_counted(tally: Tally) -> None:
    tree = TreeStage(2, grace=1.0, meter=tally)
    for rid in (7, 8, 9):
        parts = split(ShardScan(rid, 0, 2, "/proc", [big(2), big(4)]), 400_000)
        tree.handle(ShardScan(rid, 1, 2, "/proc", [big(3)]), 10.0 * rid)
        tree.handle(parts[1], 10.0 * rid)  # part 0 never comes
        (rnd,) = tree.tick(10.0 * rid + 1.0)
        assert isinstance(rnd, Round)
        assert (rnd.missing_shards, [p.pid for p in rnd.procs]) == ([0], [3, 4])
    assert tally.get(TREE_MISSING_SHARDS) == 3
    assert tally.get(TREE_SHARD_MISSING_ROUNDS, shard="0") == 3
    assert tally.get(TREE_SHARD_MISSING_ROUNDS, shard="1") == 0
    tree.handle(ShardScan(10, 0, 2, "/proc", []), 100.0)
    tree.handle(ShardScan(10, 1, 2, "/proc", []), 100.0)
    assert tally.get(TREE_SHARD_MISSING_ROUNDS, shard="0") == 0


@given(procs_st, st.integers(1, 20_000), st.integers(1, 500))
def test_the_argv_budget_is_kept_fairly(procs: list[RawProcess], budget: int, floor: int) -> None:
    scan = ShardScan(3, 1, 2, "/proc", procs)
    kept, cut = within_argv_budget(scan, budget, floor)
    after = [argv_size(p) for p in kept.procs]
    assert sum(after) <= max(budget, floor * len(procs)) + len(procs)  # + a NUL each, at most
    assert cut == sum(a != b for a, b in zip(procs, kept.procs, strict=True))
    cap = max(after, default=0)
    for before, now in zip(procs, kept.procs, strict=True):
        assert (now.pid, now.starttime, now.comm) == (before.pid, before.starttime, before.comm)
        assert "\0".join(before.cmdline).startswith("\0".join(now.cmdline))
        if argv_size(before) <= max(floor, min(cap, budget)) and now.cmdline != before.cmdline:
            raise AssertionError("an argv within its fair share was cut")


@given(st.lists(st.text(max_size=50), max_size=8), st.integers(0, 400))
def test_cut_argv_is_a_prefix_within_the_limit(argv: list[str], limit: int) -> None:
    out = cut_argv(argv, limit)
    assert sum(len(a) + 1 for a in out) <= limit + 1
    assert "\0".join(argv).startswith("\0".join(out))
    if sum(len(a) + 1 for a in argv) <= limit:
        assert out == argv


def test_a_flood_shares_the_budget_and_a_short_argv_is_untouched() -> None:
    flood = [RawProcess(p, 1, 1, "node", ["node", "x" * 300_000]) for p in range(2, 1002)]
    miner = RawProcess(5000, 1, 1, "xmrig", ["./xmrig", "-o", "pool.example.invalid:3333"])
    kept, cut = within_argv_budget(ShardScan(1, 0, 1, "/proc", [*flood, miner]), 32 << 20, 4096)
    assert cut == 1000
    assert kept.procs[-1] == miner
    assert all(argv_size(p) <= (32 << 20) // 1000 for p in kept.procs[:-1])
