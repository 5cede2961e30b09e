"""Matching real processes of this machine: a gcc-built stand-in miner in a simulated
workspace, found by the detector, judged with the bundled signatures."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from pipeline.configschema import Config
from pipeline.local import LocalDetector
from simulation.elfbins import ElfBins
from simulation.workspace import SimNode, SimulatedTree, sleeper, workspace
from stages.base.catalog import MATCH_EXE_SCANS
from stages.base.meter import Tally
from stages.base.schema import Finding, Judged, Level
from stages.execview import maps_digest
from stages.match import Matcher
from stages.signatures import load_signatures

pytestmark = pytest.mark.realproc


def test_stand_in_miner_found_at_very(elf_bins: ElfBins, tally: Tally) -> None:
    miners = [SimNode(f"miner{i}", ["./miner", "--wait"], str(elf_bins.miner)) for i in range(3)]
    tree = workspace([*miners, sleeper("editor")])
    signatures = load_signatures([Path(p) for p in Config().match.signatures])
    matcher = Matcher(signatures, tally, max_exe_bytes=128 << 20, cache_size=16)
    with SimulatedTree(tree) as sim:
        procs = {p.pid: p for p in LocalDetector(Config(), Tally()).round()}
        labels = ("miner0", "miner1", "miner2", "editor")
        files = set().union(*(executable_files(sim.pids[label]) for label in labels))
        judged = {label: matcher.judge(procs[sim.pids[label]]) for label in labels}
        editor_maps = maps_digest(Path(f"/proc/{sim.pids['editor']}/maps").read_bytes())
        # The pid is checked again: a record whose starttime is not the pid's is not judged.
        stale = msgspec.structs.replace(procs[sim.pids["miner0"]], starttime=1)
        assert matcher.judge(stale) == [Judged(stale, "reused")]
    for label in ("miner0", "miner1", "miner2"):
        (finding,) = judged[label]
        assert isinstance(finding, Finding)
        assert finding.level is Level.VERY
        assert finding.process.workspace is not None
        assert finding.process.workspace.pid == sim.pids["supervisor"]
    # Answered with the digest of the maps match read (the scan's first read has none).
    editor = procs[sim.pids["editor"]]
    assert editor.maps_id == 0
    assert judged["editor"] == [
        Judged(msgspec.structs.replace(editor, maps_id=editor_maps), "clean")
    ]
    # Three processes of one binary and one sleep: one scan per distinct file they run (the
    # two executables and the libraries mapped into them), however many processes share it.
    assert tally.get(MATCH_EXE_SCANS) == len(files)


def executable_files(pid: int) -> set[tuple[str, str]]:
    """(device, inode) of every file mapped executable into ``pid``, as /proc/<pid>/maps
    says (read here independently of stages.execview)."""
    found = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and "x" in fields[1] and fields[5].startswith("/"):
            found.add((fields[3], fields[4]))
    return found


def test_vanished_process(elf_bins: ElfBins, tally: Tally) -> None:
    signatures = load_signatures([Path(p) for p in Config().match.signatures])
    matcher = Matcher(signatures, tally, max_exe_bytes=128 << 20, cache_size=16)
    with SimulatedTree(workspace([sleeper("victim")])) as sim:
        procs = {p.pid: p for p in LocalDetector(Config(), Tally()).round()}
        victim = procs[sim.pids["victim"]]
    # The tree is stopped: every process in it has ended and been reaped.
    assert matcher.judge(victim) == [Judged(victim, "vanished")]
