"""The procfs parsers on the cases SPEC §1 and the reference's own tests name."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from simulation.fakeproc import CAT_STAT, stat_line
from stages.procfs import (
    STAT_MAX_BYTES,
    is_running,
    parse_cmdline,
    parse_gitpod_env,
    process_state,
    read_bounded,
)
from stages.statline import Stat, parse_stat

# The reference's own fixtures (proc_test.go, TestParseStat), with CAT_STAT.
KTHREADD = (
    b"2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 3 0 0 0 20 0 1 0 63 0 0 18446744073709551615 "
    b"0 0 0 0 0 0 0 2147483647 0 1 0 0 0 1 0 0 0 0 0 0 0 0 0 0 0 0 0"
)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (CAT_STAT, Stat(717, 4733826, "cat")),
        (KTHREADD, Stat(0, 63, "kthreadd")),
        # D1: comm may hold spaces and parentheses; fields count after the last ')'.
        (stat_line(5, "a b", 4, 77), Stat(4, 77, "a b")),
        (stat_line(5, "a) b", 4, 77), Stat(4, 77, "a) b")),
        (stat_line(5, "a  b", 4, 77), Stat(4, 77, "a  b")),  # panics the reference
        (stat_line(5, "x) 1 99 7", 4, 77), Stat(4, 77, "x) 1 99 7")),
        (stat_line(5, "", 4, 77), Stat(4, 77, "")),
        (stat_line(5, b"\xff\xfe)", 4, 77), Stat(4, 77, "\\xff\\xfe)")),
        (stat_line(5, "x", 2**64 - 1, 2**64 - 1), Stat(2**64 - 1, 2**64 - 1, "x")),
    ],
)
def test_stat_parses(line: bytes, expected: Stat) -> None:
    assert parse_stat(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"123 cat R 717 1 1",  # no ')'
        stat_line(5, "x", 4, 77).replace(b"(", b"").replace(b")", b""),
        stat_line(5, "x", 4, 77)[:45],  # truncated before starttime
        stat_line(5, "x", 4, 0),  # starttime 0
        stat_line(5, "x", 4, 77).replace(b" 4 5 5 ", b" four 5 5 "),  # non-numeric ppid
        stat_line(5, "x", 4, 77).replace(b" 77 ", b" 7x7 "),  # non-numeric starttime
        stat_line(5, "x", 4, 77).replace(b" 77 ", b" -77 "),
        stat_line(5, "x", 4, 77).replace(b" 77 ", b" +77 "),
        stat_line(5, "x", 2**64, 77),  # does not fit the hash's uint64
        stat_line(5, "x", 4, 77).replace(b" 77 ", b" " + b"9" * 5000 + b" "),
        stat_line(5, "x", 4, 77).replace(b" 77 ", " \u0667\u0667 ".encode()),  # non-ASCII digits
    ],
)
def test_stat_refuses(line: bytes) -> None:
    assert parse_stat(line) is None


def test_stat_cut_after_starttime_still_parses() -> None:
    # Only fields up to 22 are needed; the rest of the line may be missing.
    line = stat_line(5, "x", 4, 77)
    cut = line[: line.index(b" 77 ") + 3]
    assert parse_stat(cut) == Stat(4, 77, "x")


@pytest.mark.parametrize(
    ("raw", "argv"),
    [
        (b"", []),
        (b"\0\0\0", []),
        (b"bash\0-l\0", ["bash", "-l"]),
        (b"bash\0-l", ["bash", "-l"]),  # no trailing NUL
        (b"bash\0-l\0\0\0\0", ["bash", "-l"]),  # NUL padding, as after a setproctitle
        (b"a\0\0b\0", ["a", "", "b"]),  # an empty argument in the middle is kept
        (b"\0a\0", ["", "a"]),
        (b"sup\xffvisor\0", ["sup\\xffvisor"]),
        (b"/proc/self/exe\0ring1\0", ["/proc/self/exe", "ring1"]),
    ],
)
def test_cmdline(raw: bytes, argv: list[str]) -> None:
    assert parse_cmdline(raw) == argv


def test_environ_reference_cases() -> None:
    # TestParseGitpodEnviron, narrowed to the four workspace keys we keep.
    assert parse_gitpod_env(b"") == {}
    assert parse_gitpod_env(b"GITPOD_INSTANCE_ID=foobar\0GITPOD_SOMETHING=blabla\0X\0") == {
        "GITPOD_INSTANCE_ID": "foobar"
    }
    long = b"SOME_ENV_VAR=" + b"12345678" * 128 + b"\0GITPOD_INSTANCE_ID=bar"
    assert parse_gitpod_env(long) == {"GITPOD_INSTANCE_ID": "bar"}


def test_environ_spoofed_entry_inside_a_long_value() -> None:
    # D5: the reference reads 512-byte chunks, so text at byte 512 of a long value starts a
    # "new entry" there. It is part of the value.
    value = b"x" * (512 - len(b"HARMLESS=")) + b"GITPOD_WORKSPACE_ID=spoofed"
    raw = b"GITPOD_WORKSPACE_ID=real\0HARMLESS=" + value + b"\0"
    assert raw.index(b"GITPOD_WORKSPACE_ID=spoofed") == len(b"GITPOD_WORKSPACE_ID=real\0") + 512
    assert parse_gitpod_env(raw) == {"GITPOD_WORKSPACE_ID": "real"}


def test_environ_keys_compare_exactly_and_last_wins() -> None:
    raw = (
        b"GITPOD_WORKSPACE_IDX=wrong\0GITPOD_WORKSPACE_ID=first\0GITPOD_WORKSPACE_ID_=wrong\0"
        b"GITPOD_WORKSPACE_ID\0GITPOD_OWNER_ID=o=with=equals\0GITPOD_WORKSPACE_ID=last"
    )
    assert parse_gitpod_env(raw) == {
        "GITPOD_WORKSPACE_ID": "last",
        "GITPOD_OWNER_ID": "o=with=equals",
    }


def test_environ_truncated_drops_the_cut_entry() -> None:
    raw = b"GITPOD_OWNER_ID=o\0GITPOD_WORKSPACE_ID=cut-he"
    assert parse_gitpod_env(raw, truncated=True) == {"GITPOD_OWNER_ID": "o"}
    assert parse_gitpod_env(raw) == {"GITPOD_OWNER_ID": "o", "GITPOD_WORKSPACE_ID": "cut-he"}


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 70_000, 200_000])
@pytest.mark.parametrize("limit", [1, 4096, 100_000])
def test_read_bounded(tmp_path: Path, size: int, limit: int) -> None:
    path = tmp_path / "f"
    content = bytes(i % 251 for i in range(size))
    path.write_bytes(content)
    data, cut = read_bounded(str(path), limit)
    assert data == content[:limit]
    assert cut == (size > limit)


def test_read_bounded_fifo_does_not_block(tmp_path: Path) -> None:

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert read_bounded(str(fifo), 100) == (b"", False)


def test_process_state_of_a_live_a_zombie_and_a_gone_process() -> None:

    assert process_state(os.getpid()) == "R"
    child = subprocess.Popen(["true"])
    while process_state(child.pid) not in ("Z", None):
        pass  # it exits at once; not reaped yet, it is a zombie
    assert not is_running(child.pid)
    child.wait()
    assert process_state(child.pid) is None and not is_running(child.pid)


def test_a_stat_line_longer_than_the_kernel_writes_is_refused() -> None:
    """A read cut at the bound has no real end: its fields cannot be trusted."""

    line = stat_line(5, "x", 4, 77)
    assert parse_stat(line + b" " * (STAT_MAX_BYTES - len(line))) == Stat(4, 77, "x")
    assert parse_stat(line + b" " * (STAT_MAX_BYTES + 1 - len(line))) is None
