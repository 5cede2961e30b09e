"""The scan's steady state on fake trees: what it re-uses between rounds, what makes it read a
process again, and what it holds (memory, descriptors)."""

from __future__ import annotations

import os
import resource
from collections.abc import Callable
from pathlib import Path

import pytest

from simulation.fakeproc import CAT_STAT, RING1, FakeProcfs, stat_line
from stages.base.catalog import SCAN_SKIPPED, SCAN_TRUNCATED
from stages.base.meter import Tally
from stages.base.schema import RawProcess
from stages.known import is_procfs
from stages.shardreader import ShardReader
from stages.statline import exec_marks


def earliest(n: int) -> bytes:
    """Entropy that puts every first full re-read at the next round."""
    return bytes(n)


def latest(n: int) -> bytes:
    """Entropy that puts every first full re-read ``recheck_every`` rounds on (for 4: 65535
    mod 4 is 3, so the phase is 4)."""
    return b"\xff" * n


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def limit_leaving(free: int) -> int:
    """The RLIMIT_NOFILE under which this process can open exactly ``free`` more files."""
    in_use = {int(fd) for fd in os.listdir("/proc/self/fd")}
    limit = 0
    while limit - sum(1 for fd in in_use if fd < limit) < free:
        limit += 1
    return limit


def by_pid(procs: list[RawProcess]) -> dict[int, RawProcess]:
    return {p.pid: p for p in procs}


Change = Callable[[FakeProcfs], object]


def replace(fs: FakeProcfs, pid: int) -> None:
    """The fake process's files are removed and written anew (new inodes, same pid)."""
    fs.remove(pid)
    fs.add(pid, 11, ["again"], starttime=777)


# Each a change between two rounds that a reader must see in the very next round.
CHANGES: dict[str, Change] = {
    "new process": lambda fs: fs.add(40, 11, ["new"]),
    "exit": lambda fs: fs.remove(20),
    "exec of another program": lambda fs: fs.add(20, 11, ["job", "20"], exe="xmrig"),
    "exec that renames": lambda fs: fs.add(20, 11, ["xmrig", "-o", "pool"], exe="job"),
    "pid reused": lambda fs: fs.add(20, 11, ["other"], starttime=99_999),
    "re-parented": lambda fs: fs.add(21, 1, ["job", "21"], exe="job"),
    "stat turns malformed": lambda fs: fs.add(20, 11, stat=b"20 (x) Z"),
    "ring1 environment": lambda fs: fs.add(
        10, 1, RING1, env={"GITPOD_WORKSPACE_ID": "changed"}, exe="workspacekit"
    ),
    "files removed and written anew": lambda fs: replace(fs, 20),
}


@pytest.fixture
def tree(fakeproc: FakeProcfs) -> FakeProcfs:
    fakeproc.workspace(10, 11)
    for pid in range(20, 30):
        fakeproc.add(pid, 11, ["job", str(pid)], exe="job")
    return fakeproc


@pytest.mark.parametrize("change", CHANGES)
@pytest.mark.parametrize("keep_open", [4096, 0])
def test_a_change_is_seen_in_the_next_round(tree: FakeProcfs, change: str, keep_open: int) -> None:
    reader = ShardReader(str(tree.root), Tally(), keep_open=keep_open)
    reader.read(1)
    reader.read(2)  # every process remembered, none due for a full re-read
    CHANGES[change](tree)
    fresh = ShardReader(str(tree.root), Tally(), recheck_every=1).read(3)
    again = reader.read(3)
    assert again.procs == fresh.procs
    assert again.skipped == fresh.skipped
    reader.close()


def test_a_fake_process_moved_aside_is_seen_at_the_next_full_read(tree: FakeProcfs) -> None:
    """A plain file's kept descriptor follows that file: one removed is noticed at once (its
    link count), one only moved aside (a fake process's directory renamed, a new one in its
    place) at the process's next full read. A procfs descriptor fails as soon as its
    process is gone: no such case there."""
    reader = ShardReader(str(tree.root), Tally(), recheck_every=4, entropy=latest)
    reader.read(1)
    reader.read(2)  # its stat descriptor is kept from the second round on
    (tree.root / "20").rename(tree.root.parent / "aside-20")
    tree.add(20, 11, ["again"], starttime=777)
    starttimes = [by_pid(reader.read(r).procs)[20].starttime for r in (3, 4, 5)]
    assert starttimes == [1020, 1020, 777]  # the full read: 4 rounds after round 1
    assert reader.read(6).procs == ShardReader(str(tree.root), Tally()).read(1).procs


def test_unchanged_processes_are_the_same_records(tree: FakeProcfs) -> None:
    reader = ShardReader(str(tree.root), Tally(), recheck_every=100)
    first = by_pid(reader.read(1).procs)
    second = by_pid(reader.read(2).procs)
    assert all(second[pid] is first[pid] for pid in range(20, 30))
    assert second[10] is not first[10]  # ring1 candidates are read in full every round
    assert second[10] == first[10]


def test_an_exec_the_stat_line_does_not_show_is_seen_within_recheck_rounds(
    tree: FakeProcfs,
) -> None:
    """The residual window: an exec of a program of identical layout, name and argument sizes
    with randomisation off leaves the stat line as it was. It is seen at the process's next
    full re-read, at most ``recheck_every`` rounds after the last one."""
    reader = ShardReader(str(tree.root), Tally(), recheck_every=4, entropy=latest)
    reader.read(1)
    tree.set_exe(20, "xmrig")
    xmrig = os.stat(tree.bin / "xmrig")
    seen = []
    for round_id in range(2, 11):
        proc = by_pid(reader.read(round_id).procs)[20]
        seen.append((proc.exe_dev, proc.exe_ino) == (xmrig.st_dev, xmrig.st_ino))
    # The latest phase: the first full re-read 4 rounds after round 1, then every 4.
    assert seen == [False, False, False, True, True, True, True, True, True]
    tree.set_exe(20, "job")  # and back: seen at the next re-read, round 9
    assert [by_pid(reader.read(r).procs)[20].exe_ino == xmrig.st_ino for r in (11, 12, 13)] == [
        True,
        True,
        False,
    ]


def test_recheck_phases_are_random_within_the_period(tree: FakeProcfs) -> None:
    for pid in range(30, 230):
        tree.add(pid, 11, ["job"], exe="job")
    reader = ShardReader(str(tree.root), Tally(), recheck_every=6)
    reader.read(1)
    dues = [entry.due for entry in reader._known.values() if entry.due]
    assert set(dues) == {1 + phase for phase in range(1, 7)}


def test_vanished_processes_are_forgotten_with_their_descriptors(tree: FakeProcfs) -> None:
    before = open_fds()
    reader = ShardReader(str(tree.root), Tally())
    reader.read(1)
    assert len(reader) == 13 and open_fds() == before  # kept from a process's second round
    reader.read(2)
    assert len(reader) == 13 and open_fds() == before + 13
    for pid in range(20, 30):
        tree.remove(pid)
    reader.read(3)
    assert len(reader) == 3 and open_fds() == before + 3
    reader.close()
    assert len(reader) == 0 and open_fds() == before


def test_descriptors_kept_are_bounded_and_the_rest_still_read(tree: FakeProcfs) -> None:
    before = open_fds()
    bounded = ShardReader(str(tree.root), Tally(), keep_open=4)
    unbounded = ShardReader(str(tree.root), Tally())
    for round_id in (1, 2):
        assert bounded.read(round_id).procs == unbounded.read(round_id).procs
    assert open_fds() == before + 4 + 13
    tree.add(25, 11, ["job", "25"], exe="xmrig")
    tree.add(26, 10, ["job", "26"], exe="job")
    assert bounded.read(3).procs == unbounded.read(3).procs
    bounded.close()
    unbounded.close()
    assert open_fds() == before


def test_out_of_descriptors_the_reader_gives_back_its_own(tree: FakeProcfs) -> None:
    reader = ShardReader(str(tree.root), Tally())
    reader.read(1)
    for pid in range(40, 100):
        tree.add(pid, 11, ["more", str(pid)])
    expected = ShardReader(str(tree.root), Tally(), keep_open=0).read(2)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        # Room for 5 more descriptors: fewer than the 60 new processes would keep.
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit_leaving(5), hard))
        scans = [reader.read(r) for r in (2, 3)]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    for scan in scans:
        assert (scan.procs, scan.skipped) == (expected.procs, {})
    assert reader.open_descriptors < 73
    reader.close()


def test_every_round_counts_the_same_skips_and_cuts(tree: FakeProcfs) -> None:
    """A remembered record whose cmdline was cut is counted every round it is returned, as
    when every round read it; a process that cannot be read is counted every round too."""
    tree.add(40, 11, ["x" * 300, "long"])
    tree.add(41, 11, stat=b"garbage")
    tally = Tally()
    reader = ShardReader(str(tree.root), tally, cmdline_max_bytes=100, recheck_every=3)
    scans = [reader.read(r) for r in range(1, 11)]  # re-reads, fast paths and fds opened
    assert all(scan.skipped == {"malformed_stat": 1} for scan in scans)
    assert tally.get(SCAN_TRUNCATED, file="cmdline") == 10
    assert tally.get(SCAN_SKIPPED, reason="malformed_stat") == 10
    reader.close()


def test_a_dropped_reader_closes_its_descriptors(tree: FakeProcfs) -> None:
    before = open_fds()
    ShardReader(str(tree.root), Tally()).read(1)
    assert open_fds() == before


@pytest.mark.parametrize(
    ("change", "differs"),
    [
        (lambda s: s, False),
        (lambda s: s.replace(b" R ", b" S "), False),  # state
        (lambda s: s.replace(b" 5771264 135 ", b" 6000000 300 "), False),  # vsize, rss
        (lambda s: s.replace(b"(cat)", b"(xmrig)"), True),  # comm
        (lambda s: s.replace(b" 4194304 ", b" 4194368 "), True),  # PF_FORKNOEXEC set
        (lambda s: s.replace(b" 4194304 ", b" 4194305 "), False),  # another flag
        (lambda s: s.replace(b" 94070799228928 ", b" 94070799228929 "), True),  # start_code
        (lambda s: s.replace(b" 140722983801930 ", b" 140722983801931 "), True),  # arg_start
        (lambda s: s.replace(b" 4733826 ", b" 4733827 "), True),  # starttime
    ],
)
def test_exec_marks(change: Callable[[bytes], bytes], differs: bool) -> None:
    assert (exec_marks(change(CAT_STAT)) != exec_marks(CAT_STAT)) is differs


@pytest.mark.parametrize("line", [b"", b")", b"1 (x", stat_line(5, "x", 4, 77)[:30], b"\xff" * 9])
def test_exec_marks_of_malformed_lines_do_not_raise(line: bytes) -> None:
    exec_marks(line)


def test_a_proc_root_that_is_not_procfs_is_told(tmp_path: Path) -> None:

    assert is_procfs("/proc")
    assert not is_procfs(str(tmp_path))
    assert not is_procfs(str(tmp_path / "missing"))
