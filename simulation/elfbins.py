"""gcc-built ELF fixtures for the tests, from the stand-ins in ``simulation.standin``:
the miner with its symbol table, the same stripped (``-s``: no .symtab; .rodata and .dynsym
remain), and a clean program. ``build`` compiles them once per test session.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from simulation.standin import CLEAN_C, MINER_C, compile_c


class ElfBins(NamedTuple):
    miner: Path  # with its symbol table
    miner_stripped: Path  # gcc -s: no .symtab; .rodata and .dynsym remain
    clean: Path


def build(directory: Path) -> ElfBins:
    return ElfBins(
        miner=compile_c(MINER_C, directory / "miner"),
        miner_stripped=compile_c(MINER_C, directory / "miner-stripped", "-s"),
        clean=compile_c(CLEAN_C, directory / "clean"),
    )
