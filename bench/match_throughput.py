"""Judging a large binary with the bundled signatures: YARA-X against a pure-Python baseline.

    python -m bench.match_throughput [--mb 64] [--repeat 3] [--signatures F ...]

The data is real binary content (this Python's executable, an ELF, then shared libraries,
up to the size asked), with a miner-like string planted near the end. Both sides judge the
same bytes with the same patterns in the same run: YARA-X through ``SignatureSet.judge_bytes``
(one scan for all signatures, symbols and sections included), the baseline with one
``bytes.find`` per literal pattern and one ``re.search`` per regexp over the whole data (it
ignores kinds and slices, so it does less than YARA-X does). Prints MB/s of each and the ratio.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.table import Row, Table
from pipeline.configschema import Config
from stages.signatures import load_signatures
from stages.signatures.agentsmith import parse_agent_smith
from stages.signatures.model import Signature

# Found by the bundled "stratum-methods" signature (any bytes), so both sides have a hit.
PLANTED = b'{"method": "mining.subscribe", "params": ["stratum+tcp://pool.example.invalid"]}'
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib")


def _binary_files() -> Iterator[Path]:
    yield Path(os.path.realpath(sys.executable))
    for directory in LIBRARY_DIRS:
        if not os.path.isdir(directory):
            continue
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            if entry.is_file(follow_symlinks=False) and ".so" in entry.name:
                yield Path(entry.path)


def make_data(size: int) -> bytes:
    """``size`` bytes of real binaries (random bytes only if the machine has too few)."""
    parts: list[bytes] = []
    total = 0
    for path in _binary_files():
        if total >= size:
            break
        try:
            chunk = path.read_bytes()[: size - total]
        except OSError:
            continue
        parts.append(chunk)
        total += len(chunk)
    if total < size:
        parts.append(os.urandom(size - total))
    data = bytearray(b"".join(parts))
    data[-4096 : -4096 + len(PLANTED)] = PLANTED
    return bytes(data)


def baseline(signatures: list[Signature]) -> Callable[[bytes], list[str]]:
    """One pass per pattern: bytes.find for literals, re.search for regexps."""
    finders: list[tuple[str, Callable[[bytes], bool]]] = []
    for sig in signatures:
        if sig.regexp:
            search = re.compile(sig.pattern).search
            finders.append((sig.name, lambda d, s=search: s(d) is not None))  # type: ignore[misc]
        else:
            pattern = sig.pattern
            finders.append((sig.name, lambda d, p=pattern: d.find(p) >= 0))  # type: ignore[misc]
    return lambda data: [name for name, found in finders if found(data)]


def best_seconds(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


@dataclass(frozen=True)
class MatchFigures:
    mib: float  # size of the data judged
    signatures: int
    files: int
    yara_s: float  # best seconds of each side
    python_s: float
    find_s: float
    literals: int
    yara_hits: list[str]
    python_hits: list[str]


def measure(mb: int, repeat: int, paths: list[Path]) -> MatchFigures:
    """Both sides on the same ``mb`` MiB of real binaries, best of ``repeat`` runs each."""
    signatures = load_signatures(paths)
    parsed = [s for p in paths for s in parse_agent_smith(p.read_bytes(), str(p)).signatures]
    data = make_data(mb << 20)
    python_side = baseline(parsed)
    literals = [s for s in parsed if not s.regexp]
    find_only = baseline(literals)
    return MatchFigures(
        mib=len(data) / (1 << 20),
        signatures=len(parsed),
        files=len(paths),
        yara_s=best_seconds(lambda: signatures.judge_bytes(data), repeat),
        python_s=best_seconds(lambda: python_side(data), repeat),
        find_s=best_seconds(lambda: find_only(data), repeat),
        literals=len(literals),
        yara_hits=[h.signature for h in signatures.judge_bytes(data)],
        python_hits=python_side(data),
    )


def rows(table: Table, mb: int = 64, repeat: int = 3) -> None:
    """The figures as rows of ``make bench``'s table."""
    f = measure(mb, repeat, [Path(p) for p in Config().match.signatures])
    section = f"match: {f.mib:.0f} MiB of real binaries, {f.signatures} bundled signatures"
    yara, python = f.mib / f.yara_s, f.mib / f.python_s
    table.add(Row(section, "Python: bytes.find + re.search per signature", f"{python:.1f} MiB/s"))
    table.add(Row(section, f"  its {f.literals} bytes.find alone", f"{f.mib / f.find_s:.1f} MiB/s"))
    table.add(Row(section, "YARA-X: one scan of all signatures", f"{yara:.1f} MiB/s",
                  "Python", f"{yara / python:.1f}x"))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.match_throughput")
    parser.add_argument("--mb", type=int, default=64, help="size of the binary in MiB")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side; best counts")
    parser.add_argument("--signatures", nargs="+", help="agent-smith JSON files (default: bundled)")
    args = parser.parse_args(argv)
    paths = [Path(p) for p in (args.signatures or Config().match.signatures)]
    f = measure(args.mb, args.repeat, paths)
    print(f"data: {f.mib:.0f} MiB of real binaries, {f.signatures} signatures, {f.files} file(s)")
    print(f"YARA-X, one scan of all signatures:  {f.mib / f.yara_s:8.1f} MiB/s  hits {f.yara_hits}")
    print(
        f"Python, bytes.find + re.search each: {f.mib / f.python_s:8.1f} MiB/s  "
        f"hits {f.python_hits}"
    )
    print(f"  its {f.literals} bytes.find alone:          {f.mib / f.find_s:8.1f} MiB/s")
    print(f"ratio YARA-X / Python: {f.python_s / f.yara_s:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
