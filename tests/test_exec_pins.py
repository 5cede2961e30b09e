"""Pinned executables (bounds, sharing, no leaked descriptors) and the read at exec on fake
procfs trees (edge cases the real kernel will not produce on demand)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from simulation.fakeproc import FakeProcfs
from stages.execread import ExecReader
from stages.pins import PinnedExecutables


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def files(root: Path, sizes: list[int]) -> list[Path]:
    paths = []
    for i, size in enumerate(sizes):
        path = root / f"bin{i}"
        path.write_bytes(b"x" * size)
        paths.append(path)
    return paths


def test_one_descriptor_per_file_however_many_processes_ran_it(tmp_path: Path) -> None:
    (binary,) = files(tmp_path, [100])
    pins = PinnedExecutables()
    before = open_fds()
    for pid in range(10):
        assert pins.pin(pid, os.open(binary, os.O_RDONLY)) is not None
    assert (len(pins), pins.held_files, pins.held_bytes) == (10, 1, 100)
    assert open_fds() == before + 1
    for pid in range(9):
        pins.release(pid)
    assert pins.fd(9) is not None
    pins.release(9)
    assert open_fds() == before
    assert pins.held_bytes == 0


def test_over_its_bounds_the_oldest_pins_go_and_are_counted(tmp_path: Path) -> None:
    paths = files(tmp_path, [10, 10, 10, 10])
    pins = PinnedExecutables(max_files=2)
    for pid, path in enumerate(paths):
        pins.pin(pid, os.open(path, os.O_RDONLY))
    assert pins.held_files == 2
    assert pins.evicted == 2
    assert (pins.fd(0), pins.fd(1)) == (None, None)
    assert pins.fd(3) is not None
    by_bytes = PinnedExecutables(max_bytes=25)
    for pid, path in enumerate(paths):
        by_bytes.pin(pid, os.open(path, os.O_RDONLY))
    assert (by_bytes.held_bytes, by_bytes.evicted) == (20, 2)


def test_a_file_larger_than_the_byte_bound_or_not_regular_is_refused(tmp_path: Path) -> None:
    (big,) = files(tmp_path, [1000])
    pins = PinnedExecutables(max_bytes=999)
    before = open_fds()
    assert pins.pin("big", os.open(big, os.O_RDONLY)) is None
    assert pins.pin("dir", os.open(tmp_path, os.O_RDONLY)) is None
    assert (pins.refused, len(pins), open_fds()) == (2, 0, before)


def test_the_same_process_pinning_again_renews_its_one_pin(tmp_path: Path) -> None:
    first, second = files(tmp_path, [1, 2])
    pins = PinnedExecutables()
    pins.pin("p", os.open(first, os.O_RDONLY))
    pins.pin("p", os.open(second, os.O_RDONLY))  # it exec'd another program
    assert (len(pins), pins.held_files, pins.held_bytes) == (1, 1, 2)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(0, 5), st.integers(0, 3)), min_size=1, max_size=40
    ),
    st.integers(1, 3),
    st.integers(1, 40),
)
def test_any_sequence_keeps_the_bounds_and_leaks_no_descriptor(
    steps: list[tuple[bool, int, int]], max_files: int, max_bytes: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = files(Path(tmp), [0, 5, 10, 20])
        pins = PinnedExecutables(max_files=max_files, max_bytes=max_bytes, max_processes=4)
        before = open_fds()
        for is_pin, key, which in steps:
            if is_pin:
                pins.pin(key, os.open(paths[which], os.O_RDONLY))
            else:
                pins.release(key)
            assert pins.held_files <= max_files
            assert pins.held_bytes <= max_bytes
            assert len(pins) <= 4
            assert open_fds() == before + pins.held_files
        pins.close()
        assert open_fds() == before


def test_exec_read_of_a_fake_process_gives_the_scan_fields(fakeproc: FakeProcfs) -> None:
    fakeproc.add(40, 1, ["/usr/bin/miner", "--pool", "x"], starttime=777, exe="miner")
    pins = PinnedExecutables()
    record = ExecReader(str(fakeproc.root), pins).read(40, exec_ns=5)
    assert record is not None
    assert (record.pid, record.ppid, record.starttime, record.comm) == (40, 1, 777, "miner")
    assert record.cmdline == ["/usr/bin/miner", "--pool", "x"]
    exe = os.stat(fakeproc.binary("miner"))
    assert (record.exe_dev, record.exe_ino) == (exe.st_dev, exe.st_ino)
    assert Path(record.exe_pin).read_bytes() == fakeproc.binary("miner").read_bytes()
    assert record.gitpod_env is None and record.exec_ns == 5


def test_exec_read_of_a_ring1_candidate_reads_its_workspace_environment(
    fakeproc: FakeProcfs,
) -> None:
    fakeproc.workspace(50, 51, owner_id="alice")
    record = ExecReader(str(fakeproc.root), PinnedExecutables()).read(50)
    assert record is not None and record.gitpod_env is not None
    assert record.gitpod_env["GITPOD_OWNER_ID"] == "alice"


def test_exec_read_counts_what_it_cannot_read(fakeproc: FakeProcfs) -> None:
    fakeproc.add(60, 1, stat=b"60 (broken")
    fakeproc.add(61, 1, ["kthread"], exe=None)
    zombie = fakeproc.add(62, 1, b"", exe=None)
    (zombie / "stat").write_bytes((zombie / "stat").read_bytes().replace(b") S ", b") Z "))
    fifo = fakeproc.add(63, 1, ["fifo"], exe=None)
    os.mkfifo(fifo / "exe")
    reader = ExecReader(str(fakeproc.root), PinnedExecutables())
    assert reader.read(60) is None
    assert reader.read(99) is None
    kthread = reader.read(61)
    assert kthread is not None and (kthread.exe_ino, kthread.exe_pin) == (0, "")
    assert reader.read(62) is None
    fifo_record = reader.read(63)  # must not block on opening a FIFO, and pins nothing
    assert fifo_record is not None and fifo_record.exe_pin == ""
    assert reader.skipped == {"malformed_stat": 1, "vanished": 1, "exited": 1}
    assert reader.pins.refused == 1


def test_a_cut_cmdline_is_flagged_and_counted(fakeproc: FakeProcfs) -> None:
    fakeproc.add(70, 1, ["a" * 100, "b"])
    reader = ExecReader(str(fakeproc.root), PinnedExecutables(), cmdline_max_bytes=50)
    record = reader.read(70)
    assert record is not None and record.cmdline_cut
    assert record.cmdline == ["a" * 50]
    assert reader.truncated == {"cmdline": 1}


def test_a_process_exiting_during_the_read_keeps_a_cmdline_read_while_it_lived(
    fakeproc: FakeProcfs,
) -> None:
    """PF_EXITING (0x4 in the flags, field 9): its memory image is going, so the two stat
    reads cannot be compared; a cmdline read before that stands, an empty one does not."""
    for pid, argv in ((80, ["worker", "--fast"]), (81, [])):
        proc = fakeproc.add(pid, 1, argv)
        line = (proc / "stat").read_bytes().replace(b" 4194560 ", b" 4194564 ")
        (proc / "stat").write_bytes(line)
    reader = ExecReader(str(fakeproc.root), PinnedExecutables())
    record = reader.read(80)
    assert record is not None and record.cmdline == ["worker", "--fast"]
    assert reader.read(81) is None
    assert reader.skipped == {"exited": 1}
