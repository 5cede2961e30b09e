from __future__ import annotations

from pathlib import Path

import pytest

from simulation.elfbins import ElfBins
from simulation.elfbins import build as build_elf_bins
from simulation.fakeproc import FakeProcfs
from stages.base.meter import Tally


@pytest.fixture
def fakeproc(tmp_path: Path) -> FakeProcfs:
    """An empty fake procfs tree with an init process (pid 1)."""
    fs = FakeProcfs(tmp_path / "proc")
    fs.add(1, 0, ["/sbin/init"], exe="init")
    return fs


@pytest.fixture
def tally() -> Tally:
    return Tally()


@pytest.fixture(scope="session")
def elf_bins(tmp_path_factory: pytest.TempPathFactory) -> ElfBins:
    """gcc-built ELF fixtures with miner-like symbols and strings (see simulation/elfbins.py)."""
    return build_elf_bins(tmp_path_factory.mktemp("elf"))
