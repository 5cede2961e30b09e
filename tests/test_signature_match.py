"""Signatures against gcc-built ELF binaries and crafted files, through YARA-X."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from pipeline.configschema import Config
from simulation.elfbins import ElfBins
from stages.base.schema import Level
from stages.signatures import load_signatures, read_executable
from tests.sigfiles import one_signature, sig, write_config


def names(directory: Path, signature: dict[str, Any], target: Path) -> set[str]:
    """The names of the signatures of a one-signature config that ``target`` matches."""
    signatures = load_signatures([one_signature(directory / "sigs.json", signature)])
    return {hit.signature for hit in signatures.judge_file(str(target), 1 << 30)}


def test_symbol_found_in_symtab_not_in_stripped_binary(tmp_path: Path, elf_bins: ElfBins) -> None:
    s = sig("rx", "randomx_init_dataset", kind="elf")
    assert names(tmp_path, s, elf_bins.miner) == {"rx"}
    # gcc -s drops .symtab and these functions are not dynamic symbols.
    assert names(tmp_path, s, elf_bins.miner_stripped) == set()
    assert names(tmp_path, s, elf_bins.clean) == set()


def test_symbol_regexp_is_matched_against_each_name(tmp_path: Path, elf_bins: ElfBins) -> None:
    assert names(tmp_path, sig("cn", "^crypto.ight_hash$", kind="elf", regexp=True), elf_bins.miner)
    # Anchors apply to one symbol name, not to the whole table.
    assert not names(tmp_path, sig("cn", "^cryptonight$", kind="elf", regexp=True), elf_bins.miner)


def test_dynamic_symbols_count_as_symbols(tmp_path: Path, elf_bins: ElfBins) -> None:
    """Stripping keeps .dynsym, where the libc imports are."""
    assert names(tmp_path, sig("libc", "printf", kind="elf"), elf_bins.miner_stripped) == {"libc"}


def test_stripped_binary_found_by_rodata_and_string(tmp_path: Path, elf_bins: ElfBins) -> None:
    rodata = sig("pool", "stratum+tcp://", kind="elf-rodata")
    string = sig("method", "mining.subscribe")
    for binary in (elf_bins.miner, elf_bins.miner_stripped):
        assert names(tmp_path, rodata, binary) == {"pool"}
        assert names(tmp_path, string, binary) == {"method"}


def test_rodata_signature_ignores_bytes_outside_rodata(tmp_path: Path, elf_bins: ElfBins) -> None:
    """The symbol names live in .strtab, not .rodata: a rodata signature must not see them."""
    assert names(tmp_path, sig("rx", "randomx_init_dataset"), elf_bins.miner) == {"rx"}
    assert not names(tmp_path, sig("rx", "randomx_init_dataset", kind="elf-rodata"), elf_bins.miner)


def _random_file(path: Path, size: int, seed: int = 7) -> bytearray:
    data = bytearray(random.Random(seed).randbytes(size))  # noqa: S311 - test data
    path.write_bytes(data)
    return data


PATTERN = b"\x13\x37 cross-boundary pattern \xfe\xed"


@pytest.mark.parametrize("boundary", [4096, 8096, 65536, 1 << 20])
@pytest.mark.parametrize("before", [1, len(PATTERN) // 2, len(PATTERN) - 1])
def test_raw_pattern_across_a_chunk_boundary(tmp_path: Path, boundary: int, before: int) -> None:
    """agent-smith reads 8096-byte chunks and misses a pattern split across two; not here."""
    target = tmp_path / "blob"
    data = _random_file(target, (1 << 20) + 4096)
    data[boundary - before : boundary - before + len(PATTERN)] = PATTERN
    target.write_bytes(data)
    assert names(tmp_path, sig("p", PATTERN), target) == {"p"}


def test_regexp_over_raw_bytes(tmp_path: Path) -> None:
    target = tmp_path / "blob"
    data = _random_file(target, 50_000)
    data[30_000:30_021] = b"pool=stratum+tcp://x9"
    target.write_bytes(data)
    assert names(tmp_path, sig("re", r"stratum\+(tcp|ssl)://\w\d", regexp=True), target)
    assert not names(tmp_path, sig("re", r"stratum\+ssl://", regexp=True), target)


@pytest.mark.parametrize(
    ("start", "end", "found"),
    [
        (0, 0, True),
        (50, 200, True),  # the pattern (100..110) inside the slice
        (100, 110, True),  # exactly the slice
        (101, 0, False),  # starts after the pattern does
        (50, 109, False),  # ends inside the pattern
        (150, 300, False),  # after the pattern
        (50, 5000, False),  # slice end past the end of the file: never matches
    ],
)
def test_slice(tmp_path: Path, start: int, end: int, found: bool) -> None:
    target = tmp_path / "blob"
    data = _random_file(target, 1000)
    data[100:110] = b"0123456789"
    target.write_bytes(data)
    assert bool(names(tmp_path, sig("s", "0123456789", start=start, end=end), target)) is found


def test_non_elf_file_against_elf_signatures(tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_bytes(b"randomx_init_dataset stratum+tcp:// \x7fELF later on\n" * 100)
    for kind in ("elf", "elf-rodata"):
        for domain in ("process", "filesystem"):
            s = sig("e", "randomx_init_dataset", kind=kind, domain=domain)
            assert names(tmp_path, s, target) == set(), (kind, domain)
    # The same pattern with kind "" is found: the file was really read.
    assert names(tmp_path, sig("e", "randomx_init_dataset"), target) == {"e"}


def test_filesystem_domain_searches_the_whole_file(tmp_path: Path, elf_bins: ElfBins) -> None:
    """As the reference: a filesystem signature of kind elf is a text match on an ELF file."""
    s = sig("fs", "randomx", kind="elf", domain="filesystem")
    assert names(tmp_path, s, elf_bins.miner_stripped) == {"fs"}
    assert names(tmp_path, s, elf_bins.clean) == set()


def test_empty_file(tmp_path: Path) -> None:
    target = tmp_path / "empty"
    target.write_bytes(b"")
    for kind in ("", "elf", "elf-rodata"):
        assert names(tmp_path, sig("x", "a", kind=kind), target) == set()
    executable = read_executable(str(target), 1 << 20)
    assert (executable.data, executable.truncated) == (b"", False)


def test_file_larger_than_the_read_bound(tmp_path: Path) -> None:
    target = tmp_path / "big"
    data = _random_file(target, 2 << 20)
    data[100_000:100_010] = b"EARLY-MARK"
    data[(1 << 20) + 5 : (1 << 20) + 14] = b"LATE-MARK"
    target.write_bytes(data)
    config = write_config(
        tmp_path / "sigs.json",
        audit={"signatures": [sig("early", "EARLY-MARK"), sig("late", "LATE-MARK")]},
    )
    signatures = load_signatures([config])
    assert {h.signature for h in signatures.judge_file(str(target), 1 << 20)} == {"early"}
    assert {h.signature for h in signatures.judge_file(str(target), 2 << 20)} == {"early", "late"}
    executable = read_executable(str(target), 1 << 20)
    assert (len(executable.data), executable.truncated) == (1 << 20, True)
    assert executable.identity.size == 2 << 20


def test_hits_most_severe_first(tmp_path: Path, elf_bins: ElfBins) -> None:
    """agent-smith tries barely before audit; here the most severe level always comes first."""
    config = write_config(
        tmp_path / "sigs.json",
        barely={"signatures": [sig("str", "randomx")]},
        audit={"signatures": [sig("pool", "stratum+tcp://", kind="elf-rodata")]},
        very={"signatures": [sig("sym", "randomx_init_dataset", kind="elf")]},
    )
    hits = load_signatures([config]).judge_file(str(elf_bins.miner), 1 << 30)
    assert [(h.signature, h.level) for h in hits] == [
        ("sym", Level.VERY),
        ("pool", Level.AUDIT),
        ("str", Level.BARELY),
    ]


def test_bundled_signatures_find_the_miner_and_only_it(elf_bins: ElfBins) -> None:
    signatures = load_signatures([Path(p) for p in Config().match.signatures])
    for binary in (elf_bins.miner, elf_bins.miner_stripped):
        hits = signatures.judge_file(str(binary), 1 << 30)
        assert hits, binary
        assert hits[0].level is Level.VERY, hits
    assert signatures.judge_file(str(elf_bins.clean), 1 << 30) == []


def test_system_binaries_are_clean_under_the_bundled_signatures() -> None:
    """The defaults must not call the tools every workspace has miners."""
    signatures = load_signatures([Path(p) for p in Config().match.signatures])
    found = [shutil.which(name) for name in ("sh", "ls", "sleep", "gcc", "python3", "git")]
    paths = {os.path.realpath(p) for p in found if p is not None}
    assert len(paths) >= 3
    for path in sorted(paths):
        assert signatures.judge_file(path, 1 << 30) == [], path
