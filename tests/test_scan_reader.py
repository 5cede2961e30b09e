"""The shard reader on fake procfs trees: sharding, skips and bounds, all counted."""

from __future__ import annotations

import os

from simulation.fakeproc import RING1, FakeProcfs, env_bytes, stat_line
from stages.base.catalog import SCAN_SKIPPED, SCAN_TRUNCATED
from stages.base.meter import Tally
from stages.procfs import list_pids
from stages.shardreader import ShardReader


def test_shards_partition_the_pids(fakeproc: FakeProcfs, tally: Tally) -> None:
    for pid in range(2, 40):
        fakeproc.add(pid, 1)
    seen: list[int] = []
    for k in range(3):
        scan = ShardReader(str(fakeproc.root), tally, shard=k, shards=3).read(7)
        assert scan.round_id == 7 and scan.shard == k
        assert all(p.pid % 3 == k for p in scan.procs)
        seen += [p.pid for p in scan.procs]
    assert sorted(seen) == list(range(1, 40))


def test_listing_ignores_non_pids(fakeproc: FakeProcfs) -> None:
    for name in ("self", "0", "007x", "٣", "99999999999", "net"):
        (fakeproc.root / name).mkdir()
    fakeproc.add(7, 1)
    assert list_pids(str(fakeproc.root)) == [1, 7]


def test_record_fields(fakeproc: FakeProcfs, tally: Tally) -> None:
    fakeproc.add(5, 1, ["bash", "-l"], starttime=4242, comm="ba) sh")
    fakeproc.add(6, 5, RING1, env={"GITPOD_WORKSPACE_ID": "w", "OTHER": "x"})
    scan = ShardReader(str(fakeproc.root), tally).read(1)
    by_pid = {p.pid: p for p in scan.procs}
    p5 = by_pid[5]
    st = os.stat(fakeproc.root / "5" / "exe")
    assert (p5.ppid, p5.starttime, p5.comm, p5.cmdline) == (1, 4242, "ba) sh", ["bash", "-l"])
    assert (p5.exe_dev, p5.exe_ino) == (st.st_dev, st.st_ino)
    assert p5.gitpod_env is None  # environ is read for ring1 candidates only
    assert by_pid[6].gitpod_env == {"GITPOD_WORKSPACE_ID": "w"}
    assert scan.proc_root == str(fakeproc.root)


def test_skips_are_counted_and_others_still_read(fakeproc: FakeProcfs, tally: Tally) -> None:
    fakeproc.add(2, 1, stat=b"garbage")
    fakeproc.add(3, 1)
    (fakeproc.root / "3" / "cmdline").unlink()  # vanished between listing and reading
    fakeproc.add(4, 1)
    (fakeproc.root / "4" / "stat").unlink()
    (fakeproc.root / "4" / "stat").mkdir()  # EISDIR
    fakeproc.add(5, 1, exe=None)  # a kernel thread: no exe, still indexed
    fakeproc.add(6, 1, stat=b"6 (x) S 1 " + b"0 " * 5000)  # longer than any real stat line
    scan = ShardReader(str(fakeproc.root), tally).read(1)
    assert sorted(p.pid for p in scan.procs) == [1, 5]
    assert scan.skipped == {"malformed_stat": 2, "vanished": 1, "io_error": 1}
    assert tally.get(SCAN_SKIPPED, reason="malformed_stat") == 2
    assert scan.listed == 6
    assert [(p.exe_dev, p.exe_ino) for p in scan.procs if p.pid == 5] == [(0, 0)]


def test_a_kernel_thread_is_told_by_its_flags_and_not_read_further(
    fakeproc: FakeProcfs, tally: Tally
) -> None:
    # PF_KTHREAD (0x200000) is set by the kernel only: whatever its other files say, a
    # kernel thread has no argv and no executable, and neither is read.
    fakeproc.add(7, 2, ["not", "read"], stat=stat_line(7, "kworker/0:1", 2, 99, flags=0x200040))
    fakeproc.add(8, 1, ["read"], stat=stat_line(8, "worker", 1, 99, flags=0x40))
    by_pid = {p.pid: p for p in ShardReader(str(fakeproc.root), tally).read(1).procs}
    assert (by_pid[7].cmdline, by_pid[7].exe_dev, by_pid[7].exe_ino) == ([], 0, 0)
    assert by_pid[7].flags & 0x200000
    assert by_pid[8].cmdline == ["read"]
    assert (by_pid[8].exe_dev, by_pid[8].exe_ino) != (0, 0)


def test_bounds_are_enforced_and_counted(fakeproc: FakeProcfs, tally: Tally) -> None:
    fakeproc.add(2, 1, b"a" * 3000 + b"\0" + b"b" * 3000)
    env = env_bytes({"GITPOD_OWNER_ID": "o"}) + b"PAD=" + b"p" * 5000 + b"\0"
    env += env_bytes({"GITPOD_WORKSPACE_ID": "beyond-the-bound"})
    fakeproc.add(3, 1, RING1, env=env)
    reader = ShardReader(str(fakeproc.root), tally, cmdline_max_bytes=4000, environ_max_bytes=4000)
    by_pid = {p.pid: p for p in reader.read(1).procs}
    assert by_pid[2].cmdline == ["a" * 3000, "b" * 999]
    assert by_pid[3].gitpod_env == {"GITPOD_OWNER_ID": "o"}
    assert tally.get(SCAN_TRUNCATED, file="cmdline") == 1
    assert tally.get(SCAN_TRUNCATED, file="environ") == 1


def test_unreadable_root_is_an_empty_counted_round(tmp_path: object, tally: Tally) -> None:
    scan = ShardReader("/nonexistent/proc", tally).read(1)
    assert scan.procs == [] and scan.skipped == {"root_vanished": 1}
