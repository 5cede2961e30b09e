"""Detection end to end on this machine's /proc: the whole supervised pipeline finds a
stand-in miner inside a simulated workspace, and applies the configured penalty (issue #4)."""

from __future__ import annotations

import subprocess

import orjson
import pytest

from simulation.elfbins import ElfBins
from simulation.harness import Pipeline, procsmith, wait_until
from simulation.workspace import SimNode, SimulatedTree, sleeper, workspace
from stages.procfs import is_running

pytestmark = pytest.mark.realproc


def test_stand_in_miner_found_once_and_killed_outsider_spared(elf_bins: ElfBins) -> None:
    pipe = Pipeline("/proc", {"PROCSMITH_ENFORCE__PENALTIES__VERY": "kill-process"})
    findings = pipe.run_dir / "findings.jsonl"
    pipe.env["PROCSMITH_ENFORCE__OUTPUT"] = f'["{findings}"]'
    outside = subprocess.Popen([str(elf_bins.miner), "--wait"])
    users = [
        sleeper("editor", "vim"),
        SimNode("miner", ["build-helper", "--wait"], str(elf_bins.miner)),
    ]
    try:
        with pipe, SimulatedTree(workspace(users, workspace_id="ws-e2e")) as sim:
            miner = sim.pids["miner"]
            wait_until("the miner killed", lambda: not is_running(miner), log=pipe.log)
            rounds = pipe.metrics().get("procsmith_rounds_total")
            wait_until(
                "three more rounds",
                lambda: pipe.metrics().get("procsmith_rounds_total") >= rounds + 3,
            )
            lines = findings.read_bytes().splitlines()
            assert len(lines) == 1, lines
            finding = orjson.loads(lines[0])
            assert finding["process"]["pid"] == miner
            assert finding["process"]["workspace"]["workspace_id"] == "ws-e2e"
            assert finding["process"]["workspace"]["pid"] == sim.pids["supervisor"]
            assert (finding["level"], finding["classifier"]) == ("very", "signature")
            assert is_running(sim.pids["editor"])
            assert outside.poll() is None  # the same binary outside any workspace is left alone
            m = pipe.metrics()
            assert (
                m.get("procsmith_enforce_penalties_total", action="kill-process", result="ok") == 1
            )
    finally:
        outside.kill()
        outside.wait()


def test_demo_command() -> None:
    out = subprocess.run(
        procsmith("demo"), capture_output=True, text=True, timeout=180, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert '"signature": "randomx-api-symbols"' in out.stdout
    assert (
        "was killed; the editor and the same binary outside the workspace are untouched"
        in out.stdout
    )
