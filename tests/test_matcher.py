"""The match stage's logic on fake procfs trees: verdicts, the cache, and every skip reason."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from simulation.elfbins import ElfBins
from simulation.fakeproc import FakeProcfs
from stages.base.catalog import (
    MATCH_CACHE,
    MATCH_EXE_SCANS,
    MATCH_EXE_TRUNCATED,
    MATCH_FINDINGS,
    MATCH_SKIPPED,
)
from stages.base.meter import Tally
from stages.base.schema import Finding, Judged, Kind, Level, Process, Record
from stages.execview import PF_KTHREAD
from stages.match import Matcher
from stages.signatures import SignatureSet, load_signatures
from tests.privileges import without_file_capabilities
from tests.sigfiles import sig, write_config

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def signatures(tmp_path: Path) -> SignatureSet:
    return load_signatures(
        [
            write_config(
                tmp_path / "sigs.json",
                very={"signatures": [sig("rx-sym", "randomx_init_dataset", kind="elf")]},
                audit={
                    "binaries": ["xmrig"],
                    "signatures": [sig("pool", "stratum+tcp://", kind="elf-rodata")],
                },
                barely={"signatures": [sig("rx-str", "randomx")]},
            )
        ]
    )


def matcher(signatures: SignatureSet, tally: Tally, **kw: Any) -> Matcher:
    options = {"max_exe_bytes": 1 << 30, "cache_size": 64} | kw
    return Matcher(signatures, tally, **options)


def install(fs: FakeProcfs, name: str, source: Path) -> None:
    """Put a real binary where FakeProcfs links ``exe=name``."""
    shutil.copyfile(source, fs.bin / name)


def record(fs: FakeProcfs, pid: int, cmdline: list[str] | None = None, **kw: int) -> Process:
    return Process(
        pid=pid,
        ppid=kw.get("ppid", 1),
        starttime=kw.get("starttime", 1000 + pid),  # FakeProcfs's default
        hash=0,
        path=f"{fs.root}/{pid}/exe",
        cmdline=cmdline if cmdline is not None else ["proc"],
        kind=Kind.USER_WORKLOAD,
    )


def outcome(records: list[Record]) -> str:
    """A finding is acknowledged by enforce, so match returns it alone."""
    if len(records) == 1 and isinstance(records[0], Finding):
        return "finding"
    (judged,) = records
    assert isinstance(judged, Judged)
    return judged.outcome


def test_most_severe_signature_wins(
    fakeproc: FakeProcfs, elf_bins: ElfBins, signatures: SignatureSet, tally: Tally
) -> None:
    """The miner matches barely, audit and very signatures: the finding is at very."""
    install(fakeproc, "miner", elf_bins.miner)
    fakeproc.add(10, 1, ["./miner"], exe="miner")
    records = matcher(signatures, tally).judge(record(fakeproc, 10, ["./miner"]))
    (finding,) = records  # no verdict: enforce acknowledges a finding once it is written
    assert isinstance(finding, Finding)
    assert (finding.signature, finding.level, finding.classifier) == (
        "rx-sym",
        Level.VERY,
        "signature",
    )
    assert finding.process.pid == 10
    assert tally.get(MATCH_FINDINGS, level="very", classifier="signature") == 1


def test_clean_binary_and_command_line_finding(
    fakeproc: FakeProcfs, elf_bins: ElfBins, signatures: SignatureSet, tally: Tally
) -> None:
    install(fakeproc, "clean", elf_bins.clean)
    fakeproc.add(10, 1, exe="clean")
    fakeproc.add(11, 1, exe="clean")
    m = matcher(signatures, tally)
    assert m.judge(record(fakeproc, 10, ["clean"])) == [
        Judged(record(fakeproc, 10, ["clean"]), "clean")
    ]
    records = m.judge(record(fakeproc, 11, ["./xmrig", "-t", "2"]))
    assert isinstance(records[0], Finding)
    assert (records[0].signature, records[0].classifier) == ("xmrig", "commandline")


def test_two_hundred_processes_of_one_binary_cost_one_scan(
    fakeproc: FakeProcfs, elf_bins: ElfBins, signatures: SignatureSet, tally: Tally
) -> None:
    install(fakeproc, "miner", elf_bins.miner)
    install(fakeproc, "clean", elf_bins.clean)
    for pid in range(100, 300):
        fakeproc.add(pid, 1, exe="miner")
    fakeproc.add(300, 1, exe="clean")
    m = matcher(signatures, tally)
    outcomes = [outcome(m.judge(record(fakeproc, pid))) for pid in range(100, 301)]
    assert outcomes == ["finding"] * 200 + ["clean"]
    assert tally.get(MATCH_EXE_SCANS) == 2
    assert (tally.get(MATCH_CACHE, result="miss"), tally.get(MATCH_CACHE, result="hit")) == (2, 199)


def test_a_changed_executable_is_scanned_again(
    fakeproc: FakeProcfs, elf_bins: ElfBins, signatures: SignatureSet, tally: Tally
) -> None:
    install(fakeproc, "tool", elf_bins.clean)
    fakeproc.add(10, 1, exe="tool")
    m = matcher(signatures, tally)
    assert outcome(m.judge(record(fakeproc, 10))) == "clean"
    install(fakeproc, "tool", elf_bins.miner)  # same inode, new size and mtime
    assert outcome(m.judge(record(fakeproc, 10))) == "finding"
    assert tally.get(MATCH_EXE_SCANS) == 2


def test_cache_is_bounded(
    fakeproc: FakeProcfs, elf_bins: ElfBins, signatures: SignatureSet, tally: Tally
) -> None:
    install(fakeproc, "a", elf_bins.clean)
    install(fakeproc, "b", elf_bins.miner)
    fakeproc.add(10, 1, exe="a")
    fakeproc.add(11, 1, exe="b")
    m = matcher(signatures, tally, cache_size=1)
    for pid in (10, 11, 10, 11):
        m.judge(record(fakeproc, pid))
    assert tally.get(MATCH_EXE_SCANS) == 4


def test_reused_pid_gets_no_finding(
    fakeproc: FakeProcfs, elf_bins: ElfBins, signatures: SignatureSet, tally: Tally
) -> None:
    install(fakeproc, "miner", elf_bins.miner)
    fakeproc.add(10, 1, ["./xmrig"], exe="miner", starttime=5555)
    proc = record(fakeproc, 10, ["./xmrig"], starttime=4444)
    assert matcher(signatures, tally).judge(proc) == [Judged(proc, "reused")]
    assert tally.get(MATCH_SKIPPED, reason="reused") == 1


def test_vanished_process(
    fakeproc: FakeProcfs, elf_bins: ElfBins, signatures: SignatureSet, tally: Tally
) -> None:
    proc = record(fakeproc, 10, ["./xmrig"])  # never existed in the tree
    assert matcher(signatures, tally).judge(proc) == [Judged(proc, "vanished")]
    assert tally.get(MATCH_SKIPPED, reason="vanished") == 1


def test_kernel_thread(fakeproc: FakeProcfs, signatures: SignatureSet, tally: Tally) -> None:
    fakeproc.add(2, 0, b"", exe=None, comm="kthreadd")
    proc = msgspec.structs.replace(record(fakeproc, 2, [], ppid=0), flags=PF_KTHREAD)
    assert matcher(signatures, tally).judge(proc) == [Judged(proc, "kernel")]
    assert tally.get(MATCH_SKIPPED, reason="kernel") == 1


def test_no_executable_and_not_a_kernel_thread_is_unjudgeable(
    fakeproc: FakeProcfs, signatures: SignatureSet, tally: Tally
) -> None:
    """Issue 11: a running process whose exe cannot be resolved (and that has no live thread
    to look through) is reported, not taken for a kernel thread and dropped."""
    fakeproc.add(10, 1, b"", exe=None)
    [finding] = matcher(signatures, tally).judge(record(fakeproc, 10, []))
    assert isinstance(finding, Finding)
    assert (finding.signature, finding.level, finding.classifier, finding.file_role) == (
        "unjudgeable-vanished",
        Level.BARELY,
        "unjudgeable",
        "exe",
    )


def test_unreadable_executable_is_an_unjudgeable_finding(
    fakeproc: FakeProcfs, signatures: SignatureSet, tally: Tally
) -> None:
    """The exe link resolves but its file cannot be opened (vanished before it was pinned):
    a finding at the configured level, naming the file."""
    _hostile_exe(fakeproc, 10, fakeproc.bin / "gone")
    m = matcher(signatures, tally, unjudgeable_level=Level.AUDIT)
    [finding] = m.judge(record(fakeproc, 10))
    assert isinstance(finding, Finding)
    assert (finding.signature, finding.level, finding.file) == (
        "unjudgeable-vanished",
        Level.AUDIT,
        str(fakeproc.bin / "gone"),
    )


def _hostile_exe(fakeproc: FakeProcfs, pid: int, target: Path) -> None:
    fakeproc.add(pid, 1, exe=None)
    (fakeproc.root / str(pid) / "exe").symlink_to(target)


def test_fifo_and_device_are_skipped_without_blocking(
    fakeproc: FakeProcfs, signatures: SignatureSet, tally: Tally
) -> None:
    fifo = fakeproc.bin / "fifo"
    os.mkfifo(fifo)
    _hostile_exe(fakeproc, 10, fifo)
    _hostile_exe(fakeproc, 11, Path("/dev/zero"))
    m = matcher(signatures, tally)
    for pid in (10, 11):
        assert outcome(m.judge(record(fakeproc, pid))) == "error"
    assert tally.get(MATCH_SKIPPED, reason="not_regular") == 2
    # ... and the command line is still judged.
    assert isinstance(m.judge(record(fakeproc, 10, ["xmrig"]))[0], Finding)


def test_huge_file_is_read_only_up_to_the_bound(
    fakeproc: FakeProcfs, signatures: SignatureSet, tally: Tally
) -> None:
    huge = fakeproc.bin / "huge"
    with open(huge, "wb") as f:
        f.write(b"\x7fELF randomx")
        f.truncate(8 << 30)  # sparse: 8 GiB that take no disk
    _hostile_exe(fakeproc, 10, huge)
    m = matcher(signatures, tally, max_exe_bytes=1 << 20)
    records = m.judge(record(fakeproc, 10))
    assert isinstance(records[0], Finding) and records[0].signature == "rx-str"
    assert tally.get(MATCH_EXE_TRUNCATED) == 1


def _elf_with(data: bytes, **fields: int) -> bytes:
    """An ELF64 header rewritten: e_shoff, e_shentsize, e_shnum, e_shstrndx."""
    out = bytearray(data)
    offsets = {"shoff": ("<Q", 0x28), "shentsize": ("<H", 0x3A), "shnum": ("<H", 0x3C)}
    offsets["shstrndx"] = ("<H", 0x3E)
    for name, value in fields.items():
        fmt, offset = offsets[name]
        struct.pack_into(fmt, out, offset, value)
    return bytes(out)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: d[: len(d) // 3],  # truncated in the middle of the code
        lambda d: d[:70],  # a header and a bit
        lambda d: _elf_with(d, shnum=0xFFFF, shentsize=0xFFFF),
        lambda d: _elf_with(d, shoff=2**63, shnum=0xFFFF),
        lambda d: _elf_with(d, shstrndx=0xFFFE),
    ],
)
def test_hostile_elf_headers_are_judged(
    fakeproc: FakeProcfs,
    elf_bins: ElfBins,
    signatures: SignatureSet,
    tally: Tally,
    mangle: Callable[[bytes], bytes],
) -> None:
    (fakeproc.bin / "bad").write_bytes(mangle(elf_bins.miner.read_bytes()))
    fakeproc.add(10, 1, exe="bad")
    records = matcher(signatures, tally).judge(record(fakeproc, 10))
    assert outcome(records) in ("clean", "finding")
    assert tally.get(MATCH_EXE_SCANS) == 1


def test_scan_timeout_is_counted_and_remembered(
    fakeproc: FakeProcfs, tmp_path: Path, tally: Tally
) -> None:
    slow = tmp_path / "slow.yar"
    slow.write_text(
        "rule slow { condition: for all i in (0..10000000000) : (uint8(i % filesize) != 0x99) }"
    )
    (fakeproc.bin / "target").write_bytes(b"\x00" * 4096)
    fakeproc.add(10, 1, exe="target")
    fakeproc.add(11, 1, exe="target")
    signatures = load_signatures([slow])
    m = Matcher(signatures, tally, max_exe_bytes=1 << 20, cache_size=8, scan_timeout=1)
    assert [outcome(m.judge(record(fakeproc, pid))) for pid in (10, 11)] == ["error", "error"]
    assert tally.get(MATCH_SKIPPED, reason="timeout") == 2
    assert tally.get(MATCH_EXE_SCANS) == 1


DENIED_SCRIPT = """
import sys, orjson
from stages.base.meter import Tally
from stages.base.schema import Kind, Process
from stages.execview import PF_KTHREAD
from stages.match import Matcher
from stages.signatures import load_signatures
from pathlib import Path
from typing import Any
root, sigs = sys.argv[1], sys.argv[2]
tally = Tally()
m = Matcher(load_signatures([Path(sigs)]), tally, max_exe_bytes=1 << 20, cache_size=4)
proc = Process(10, 1, 1010, 0, root + "/10/exe", ["./xmrig"], Kind.USER_WORKLOAD)
out = [r.outcome if hasattr(r, "outcome") else r.signature for r in m.judge(proc)]
denied = tally.get("procsmith_match_skipped_total", reason="denied")
sys.stdout.buffer.write(orjson.dumps([out, denied]))
"""


def test_permission_denied_is_counted(tmp_path: Path, elf_bins: ElfBins) -> None:
    """An executable this process may not read: counted as denied; the argv is still judged."""
    fs = FakeProcfs(tmp_path / "proc")
    install(fs, "miner", elf_bins.miner)
    (fs.bin / "miner").chmod(0)
    fs.add(10, 1, ["./xmrig"], exe="miner")
    sigs = write_config(tmp_path / "sigs.json", audit={"binaries": ["xmrig"]})
    result = subprocess.run(
        [
            *without_file_capabilities(),
            sys.executable,
            "-c",
            DENIED_SCRIPT,
            str(fs.root),
            str(sigs),
        ],
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": os.environ.get("PATH", "")},
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert orjson.loads(result.stdout) == [["xmrig"], 1]  # a finding alone: enforce acknowledges it
