"""The library API over several rounds with one LRU: D7 and D8 end to end on a fake tree."""

from __future__ import annotations

from pipeline.configschema import Config, FilterConfig
from pipeline.local import LocalDetector
from simulation.fakeproc import FakeProcfs


def detector(fs: FakeProcfs, lru: int = 2000) -> LocalDetector:
    return LocalDetector(Config(proc_root=str(fs.root), filter=FilterConfig(lru_size=lru)))


def test_emitted_once_again_after_exec_not_after_parent_death(fakeproc: FakeProcfs) -> None:
    fakeproc.workspace(10, 11)
    fakeproc.add(12, 11, ["bash"], exe="bash")
    fakeproc.add(13, 12, ["worker"], exe="worker")
    det = detector(fakeproc)
    assert [p.pid for p in det.round()] == [12, 13]
    assert det.round() == []

    # 13 execs another binary: same pid and starttime, new executable → judged again (D8).
    fakeproc.add(13, 12, ["worker"], exe="xmrig")
    assert [p.pid for p in det.round()] == [13]
    assert det.round() == []

    # 12 dies and 13 is re-parented to the supervisor: a new ppid, same process → not again.
    fakeproc.remove(12)
    fakeproc.add(13, 11, ["worker"], exe="xmrig")
    again = det.round()
    assert again == []


def test_reused_pid_is_new(fakeproc: FakeProcfs) -> None:
    fakeproc.workspace(10, 11)
    fakeproc.add(12, 11, ["a"], starttime=500)
    det = detector(fakeproc)
    assert [p.cmdline for p in det.round()] == [["a"]]
    fakeproc.add(12, 11, ["b"], starttime=900)
    assert [p.cmdline for p in det.round()] == [["b"]]


def test_live_processes_are_never_judged_twice_however_small_the_lru(
    fakeproc: FakeProcfs,
) -> None:
    """The reference re-judges (and re-penalises) every live process beyond the LRU's size
    each round. Here the LRU holds every live judged process; lru_size bounds the gone ones."""
    fakeproc.workspace(10, 11)
    for pid in range(20, 30):
        fakeproc.add(pid, 11)
    det = detector(fakeproc, lru=4)
    assert len(det.round()) == 10
    assert det.round() == [] and det.round() == []
    assert len(det.filter) == 10  # all live: over lru_size, bounded by the live set
    for pid in range(20, 28):
        fakeproc.remove(pid)
    fakeproc.add(40, 11)
    assert [p.pid for p in det.round()] == [40]
    assert len(det.filter) == 4  # 3 live, and the most recent of the 8 gone
    assert det.round() == []
