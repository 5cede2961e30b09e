"""The LRU filter: D7 (seen only when marked) and D8 (the key)."""

from __future__ import annotations

import msgspec

from pipeline.catalog import CACHE_USE
from pipeline.meter import Tally
from pipeline.schema import Kind, Process
from stages.filter import SeenFilter


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
