"""Issue 11's readers: maps, stat marks, interpreter scripts, argv windows — properties on
any bytes, and behaviour on this machine's real processes (stand-ins that only sleep)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st

from simulation.fakeproc import CAT_STAT
from simulation.standin import Tricks
from stages import fullread, statline
from stages.base.catalog import MATCH_FILES_CUT
from stages.base.meter import Tally
from stages.base.schema import Finding, Kind, RawProcess
from stages.classify import process_record
from stages.execview import (
    PF_KTHREAD,
    arg_span,
    exec_id,
    exec_mappings,
    maps_digest,
    read_maps,
    stat_flags,
    stat_vsize,
)
from stages.judgeview import ARGV_WINDOW, argv_windows
from stages.match import Matcher
from stages.procfs import STAT_MAX_BYTES
from stages.scripts import Script, interpreter_name, script_of
from stages.shardreader import ShardReader
from stages.signatures import load_signatures
from stages.statline import exec_marks, parse_moved_line, parse_stat, parse_stat_line

REPO = Path(__file__).resolve().parent.parent
LINE = b"7f00-7f10 r-xp 00001000 fe:00 4242                     /usr/lib/libx.so (deleted)\n"


@given(st.binary(max_size=4096))
def test_stat_and_maps_readers_take_any_bytes(data: bytes) -> None:
    for value in (exec_id(data), stat_flags(data), stat_vsize(data), arg_span(data)):
        assert value >= 0
    assert maps_digest(data) >= 0
    for m in exec_mappings(data):
        assert m.end >= 0 and "\n" not in m.path


def _agrees(data: bytes) -> None:
    line, stat = parse_stat_line(data), parse_stat(data)
    moved = parse_moved_line(data)
    close = data.rfind(b")")  # the marks of the whole line split, as exec_marks first did
    assert (
        moved.marks == exec_marks(data) == statline._marks(data, close, data[close + 1 :].split())
    )
    assert moved.ppid == (None if stat is None else stat.ppid)
    assert moved.vsize == (0 if stat is None else stat_vsize(data))
    if stat is None:
        assert line is None
        return
    assert line is not None
    assert (line.ppid, line.starttime, line.comm) == (stat.ppid, stat.starttime, stat.comm)
    assert (line.exec_id, line.flags) == (exec_id(data), stat_flags(data))


@given(st.binary(max_size=4200))
def test_the_one_split_stat_parse_agrees_with_each_parser_on_any_bytes(data: bytes) -> None:
    _agrees(data)


@given(
    st.binary(max_size=40),
    st.lists(
        st.one_of(
            st.integers(0, 2**64 + 5).map(lambda n: str(n).encode()),
            st.sampled_from([b"-1", b"x", b"99999999999999999999999", b"S"]),
        ),
        min_size=0,
        max_size=60,
    ),
)
def test_the_one_split_stat_parse_agrees_on_stat_like_lines(
    comm: bytes, fields: list[bytes]
) -> None:
    _agrees(b"42 (" + comm + b") " + b" ".join(fields) + b"\n")


def test_the_one_split_stat_parses_refuse_a_line_longer_than_the_kernel_writes() -> None:
    """Cut at its bound, a line's end is not its end: a comm padded past STAT_MAX_BYTES."""
    open_, close = CAT_STAT.index(b"(") + 1, CAT_STAT.index(b")")
    for comm in (b"c" * 16, b"c" * STAT_MAX_BYTES):
        data = CAT_STAT[:open_] + comm + CAT_STAT[close:]
        _agrees(data)
        parsed = parse_moved_line(data).ppid is not None, parse_stat_line(data) is not None
        assert parsed == ((True, True) if len(data) <= STAT_MAX_BYTES else (False, False))


def test_the_one_split_stat_parse_of_the_kernels_line() -> None:
    line = parse_stat_line(CAT_STAT)
    assert line is not None
    assert (line.comm, line.flags) == ("cat", 4194304)


# The maps patterns as first written, anchored with "^" under re.M: the reference the faster
# newline-anchored ones in stages.execview must agree with.
_LINE_REF = re.compile(
    rb"^([0-9a-f]+)-([0-9a-f]+) ..x. [0-9a-f]+ ([0-9a-f]+):([0-9a-f]+) ([1-9][0-9]*) +(.*)$", re.M
)
_IDENTITY_REF = re.compile(rb"^[0-9a-f]+-[0-9a-f]+ ..x. [0-9a-f]+ ([0-9a-f:]+ [1-9][0-9]*)", re.M)
_MAPS_LINE = st.builds(
    lambda a, b, perms, dev, ino, path: (
        b"%x-%x %s 00000000 %s %d %s" % (a, b, perms, dev, ino, path)
    ),
    st.integers(0, 2**48),
    st.integers(0, 2**48),
    st.sampled_from([b"r-xp", b"r--p", b"rwxp", b"--xs", b"r-x"]),
    st.sampled_from([b"fe:00", b"00:00", b"103:02", b"x:y"]),
    st.integers(0, 10**6),
    st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")),
)


def _agree_with_the_reference(maps: bytes) -> None:
    want_ids = sorted(set(_IDENTITY_REF.findall(maps)))
    want_digest = xxhash.xxh64_intdigest(b"\n".join(want_ids)) if want_ids else 0
    assert maps_digest(maps) == want_digest
    got = [(m.range_name, m.dev, m.ino, m.path) for m in exec_mappings(maps)]
    seen: set[tuple[int, int]] = set()
    want = []
    for m in _LINE_REF.finditer(maps):
        if len(m[1]) > 16 or len(m[2]) > 16 or len(m[3]) > 8 or len(m[4]) > 8 or len(m[5]) > 20:
            continue
        ident = (os.makedev(int(m[3], 16), int(m[4], 16)), int(m[5]))
        if ident not in seen:
            seen.add(ident)
            path = m[6].decode("utf-8", "backslashreplace")
            want.append((f"{int(m[1], 16):x}-{int(m[2], 16):x}", *ident, path))
    assert got == want


@given(st.binary(max_size=600))
def test_maps_readers_agree_with_line_anchored_patterns_on_any_bytes(maps: bytes) -> None:
    _agree_with_the_reference(maps)


@given(st.lists(_MAPS_LINE, max_size=20), st.sampled_from([b"\n", b"\r\n", b"\n\n"]))
def test_maps_readers_agree_with_line_anchored_patterns_on_maps(
    lines: list[bytes], sep: bytes
) -> None:
    _agree_with_the_reference(sep.join(lines))


@given(st.lists(st.text(max_size=40), max_size=12), st.text(max_size=40))
def test_script_of_takes_any_argv(argv: list[str], exe: str) -> None:
    script = script_of(argv, exe)
    assert script is None or isinstance(script.path, str)


def test_stat_fields_of_the_kernels_line() -> None:
    assert stat_flags(CAT_STAT) == 4194304
    assert stat_vsize(CAT_STAT) == 5771264
    assert arg_span(CAT_STAT) == 140722983801950 - 140722983801930
    assert exec_id(CAT_STAT) == exec_id(CAT_STAT) != exec_id(CAT_STAT.replace(b"(cat)", b"(dog)"))


def test_maps_lines() -> None:
    anon = b"7f20-7f30 r-xp 00000000 00:00 0 \n7f30-7f40 rw-p 00000000 fe:00 9 /data\n"
    [m] = exec_mappings(LINE + anon + LINE)  # one per file, executable and file-backed only
    assert (m.range_name, m.dev, m.ino, m.path) == (
        "7f00-7f10",
        os.makedev(0xFE, 0),
        4242,
        "/usr/lib/libx.so (deleted)",
    )
    assert maps_digest(anon) == 0
    assert maps_digest(LINE + anon) == maps_digest(anon + LINE + LINE) != 0


@pytest.mark.parametrize(
    ("argv", "exe", "want"),
    [
        (["python3", "-u", "-W", "ignore", "m.py", "x"], "/usr/bin/python3.11", Script("m.py")),
        (["python3", "-m", "http.server"], "/usr/bin/python3.11", None),
        (["python3", "-c", "print(1)"], "/usr/bin/python3.11", Script("-c", "print(1)")),
        (["vim", "miner.py"], "/usr/bin/python3.11", Script("miner.py")),  # by its exe
        (["python3", "miner.py"], "/tmp/renamed", Script("miner.py")),  # by argv[0]
        (["bash", "-e", "-o", "pipefail", "run.sh"], "/usr/bin/bash", Script("run.sh")),
        (["sh", "-c", "sleep 1"], "/usr/bin/dash", Script("-c", "sleep 1")),
        (["node", "-r", "./hook.js", "app.js"], "/usr/bin/node", Script("app.js")),
        (["java", "-Xmx1g", "-jar", "m.jar"], "/usr/bin/java", Script("m.jar")),
        (["java", "-cp", "a.jar", "Main"], "/usr/bin/java", None),
        (["perl", "-e", "1"], "/usr/bin/perl", Script("-e", "1")),
        (["vim", "file.py"], "/usr/bin/vim", None),
    ],
)
def test_script_arguments(argv: list[str], exe: str, want: Script | None) -> None:
    assert script_of(argv, exe) == want


def test_interpreter_names() -> None:
    assert [interpreter_name(n) for n in ("/usr/bin/python3.11", "lua5.4", "php8.1", "bash")] == [
        "python",
        "lua",
        "php",
        "bash",
    ]


@pytest.fixture(scope="module")
def tricks(tmp_path_factory: pytest.TempPathFactory) -> Tricks:
    return Tricks(tmp_path_factory.mktemp("tricks"), big_pad=1)


def _read_until(
    reader: ShardReader, pid: int, cond: Callable[[RawProcess], bool], rounds: int = 40
) -> RawProcess:
    for i in range(rounds):
        proc = {p.pid: p for p in reader.read(i).procs}.get(pid)
        if proc is not None and cond(proc):
            return proc
        time.sleep(0.05)
    raise AssertionError(f"not seen within {rounds} rounds")


def _maps_now(pid: int) -> int:
    with open(f"/proc/{pid}/maps", "rb") as f:
        return maps_digest(f.read())


@pytest.mark.realproc
def test_scan_sees_a_dlopen_before_its_full_re_read(tricks: Tricks) -> None:
    env = {"STANDIN_MODE": "dlopen", "STANDIN_LIB": str(tricks.libminer)}
    child = subprocess.Popen(["worker"], executable=str(tricks.tricks), env=env)
    try:
        reader = ShardReader("/proc", Tally(), recheck_every=10_000)  # no full re-read
        time.sleep(0.3)  # started and waiting: its stat line stays as it is
        first = _read_until(reader, child.pid, lambda p: True)
        idle = [{p.pid: p for p in reader.read(i).procs}[child.pid] for i in range(3)]
        # Not read at its first read, nor while nothing changes (match reads them as it
        # judges): no maps_id yet.
        assert [p.maps_id for p in (first, *idle)] == [0, 0, 0, 0]
        os.kill(child.pid, signal.SIGUSR1)
        lib = str(tricks.libminer.resolve()).encode()
        deadline = time.monotonic() + 30
        while lib not in Path(f"/proc/{child.pid}/maps").read_bytes():  # dlopen done
            assert time.monotonic() < deadline, "the library was not loaded"
            time.sleep(0.02)
        # the virtual size changed: the maps are read from then on, within MAPS_HINT_ROUNDS
        later = _read_until(reader, child.pid, lambda p: p.maps_id != 0)
        assert later.maps_id == _maps_now(child.pid)
        assert later.exec_id == first.exec_id
    finally:
        child.kill()
        child.wait()


@pytest.mark.realproc
def test_scan_reads_an_idle_process_maps_once_and_again_once_it_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What a process did before the scan first saw it is not known (it may have mapped a
    # library after match judged it), so its first full re-read reads its maps; after that
    # an idle one cannot change them (only it maps), and only once it runs are they read.
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGUSR1, lambda *a: sum(range(3 * 10**7)))\n"
        "while True: time.sleep(99)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code])
    reads: list[str] = []

    def counted(base: str) -> tuple[bytes, bool]:
        if base == f"/proc/{child.pid}/":
            reads.append(base)
        return read_maps(base)

    monkeypatch.setattr(fullread, "read_maps", counted)
    try:
        time.sleep(0.5)
        reader = ShardReader("/proc", Tally(), recheck_every=2)
        idle = [{p.pid: p for p in reader.read(i).procs}[child.pid] for i in range(12)]
        assert idle[0].maps_id == 0  # not at its first read
        assert idle[-1].maps_id == _maps_now(child.pid)
        assert len(reads) == 1  # six full re-reads, one read of the maps
        os.kill(child.pid, signal.SIGUSR1)  # a second or so of CPU: its times move
        _read_until(reader, child.pid, lambda p: len(reads) > 1, rounds=40)
    finally:
        child.kill()
        child.wait()


@pytest.mark.realproc
def test_scan_exec_id_flags_and_argv_length() -> None:
    code = (
        "import os, signal, sys, time; signal.signal(signal.SIGUSR1, lambda *a: os.execv("
        "sys.executable, [sys.executable, '-c', 'import time; time.sleep(99)'])); time.sleep(99)"
    )
    child = subprocess.Popen([sys.executable, "-c", code, "x" * 5000])
    try:
        reader = ShardReader("/proc", Tally(), recheck_every=10_000, cmdline_max_bytes=1024)
        time.sleep(0.5)
        first = _read_until(reader, child.pid, lambda p: True)
        assert first.argv_bytes > 5000  # cut at 1024, its length still known
        os.kill(child.pid, signal.SIGUSR1)  # python execs python: same executable
        again = _read_until(reader, child.pid, lambda p: p.exec_id != first.exec_id)
        assert (again.exe_dev, again.exe_ino) == (first.exe_dev, first.exe_ino)
        kthreadd = {p.pid: p for p in reader.read(99).procs}.get(2)
        if kthreadd is not None:  # a container may not show it
            assert kthreadd.flags & PF_KTHREAD
    finally:
        child.kill()
        child.wait()


@pytest.mark.realproc
def test_argv_windows_cover_the_middle_of_a_long_argv(tricks: Tricks) -> None:
    token = "stratum+tcp://pool.example.invalid:3333"  # noqa: S105 - a pool URL
    argv = ["tool", *["x" * 100_000] * 5, token, *["y" * 100_000] * 5]
    child = subprocess.Popen(argv, executable=str(tricks.clean_twin), env={"STANDIN_WAIT": "1"})
    try:
        time.sleep(0.3)
        windows = list(argv_windows(f"/proc/{child.pid}/cmdline", 0))
        assert len(windows) >= 1_000_000 // ARGV_WINDOW
        assert any(token in w for w in windows)
    finally:
        child.kill()
        child.wait()


@pytest.mark.realproc
def test_mappings_are_bounded_and_the_cut_counted(tricks: Tricks) -> None:
    env = {"LD_PRELOAD": str(tricks.libminer)}
    child = subprocess.Popen(["sleep", "60"], env=env)
    try:
        time.sleep(0.3)
        raw = {p.pid: p for p in ShardReader("/proc", Tally()).read(1).procs}[child.pid]
        proc = process_record(raw, Kind.USER_WORKLOAD, None, "/proc")
        sigs = load_signatures([REPO / "config" / "signatures.json"])
        tally = Tally()
        [found] = Matcher(sigs, tally, max_exe_bytes=1 << 24, cache_size=8).judge(proc)
        assert isinstance(found, Finding)
        assert (found.file, found.file_role) == (str(tricks.libminer), "mapping")
        # With room for one mapping only, the non-system library still comes first...
        [found] = Matcher(sigs, tally, max_exe_bytes=1 << 24, cache_size=8, max_mappings=1).judge(
            proc
        )
        assert isinstance(found, Finding) and found.file == str(tricks.libminer)
        assert tally.get(MATCH_FILES_CUT, reason="count") >= 1  # ...and libc, ld.so are cut
    finally:
        child.kill()
        child.wait()
