"""Evasions of the reference, each tried against the whole pipeline on this machine's /proc
(issue #6). One simulated workspace carries all four:

- D4: ring1's first (lowest-pid) child is a sidecar; the supervisor is its second child. The
  reference looks only at the first child and sees no workspace at all.
- D5: a long environment value of ring1 holds ``GITPOD_WORKSPACE_ID=spoofed`` at byte 512,
  where the reference's 512-byte chunks make it a new entry that overrides the real id.
- D6: the stand-in miner runs as ``supervisor init`` and as a nested ``/proc/self/exe ring1``
  inside the workspace; the reference exempts both.
- D8: a process is judged clean, then execs the miner under the same pid; the reference's
  LRU key (pid, ppid, starttime) is unchanged, so it is never judged again.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import orjson
import pytest

from simulation.elfbins import ElfBins
from simulation.harness import Pipeline, wait_until
from simulation.workspace import SimNode, SimulatedTree, python_node, sleeper, workspace

pytestmark = pytest.mark.realproc

REAL_ID = "ws-real"
SPOOF = b"GITPOD_WORKSPACE_ID=spoofed"


def spoofing_env() -> dict[str, str]:
    """ring1's own variables come first in its environ (see SimulatedTree), so the offset of
    the spoof can be computed: the workspace ids, then PAD=<filler><spoof>."""
    head = b"".join(
        f"{k}={v}".encode() + b"\0"
        for k, v in {
            "GITPOD_OWNER_ID": "sim-owner",
            "GITPOD_WORKSPACE_ID": REAL_ID,
            "GITPOD_INSTANCE_ID": "sim-instance",
            "GITPOD_WORKSPACE_CONTEXT_URL": "https://example.com/sim/repo",
        }.items()
    )
    filler = 512 - len(head) - len(b"PAD=")
    return {"PAD": "x" * filler + SPOOF.decode()}


def findings_by_pid(path: Path) -> dict[int, dict[str, object]]:
    if not path.exists():
        return {}
    return {f["process"]["pid"]: f for f in map(orjson.loads, path.read_bytes().splitlines())}


def test_the_reference_evasions_are_caught(elf_bins: ElfBins) -> None:
    miner = str(elf_bins.miner)
    users = [
        SimNode("renamed", ["supervisor", "init"], miner, {"STANDIN_WAIT": "1"}),  # D6
        SimNode("nested", ["/proc/self/exe", "ring1"], miner, {"STANDIN_WAIT": "1"}),  # D6
        python_node(  # D8: clean until SIGUSR1, then the miner under the same pid
            "shifter", ["python3", "shifter"], [], exec_on_usr1=(miner, ["shifter", "--wait"])
        ),
        sleeper("editor", "vim"),
    ]
    tree = workspace(
        users, workspace_id=REAL_ID, extra_env=spoofing_env(), sidecars=[sleeper("sidecar")]
    )
    pipe = Pipeline("/proc")
    out = pipe.run_dir / "findings.jsonl"
    pipe.env["PROCSMITH_ENFORCE__OUTPUT"] = f'["{out}"]'
    with pipe, SimulatedTree(tree) as sim:
        p = sim.pids
        # The arrangement the reference falls for, checked on the live processes.
        assert p["sidecar"] < p["supervisor"]  # D4: the supervisor is not the first child
        environ = Path(f"/proc/{p['ring1']}/environ").read_bytes()
        assert environ.index(SPOOF) == 512  # D5: at the reference's chunk boundary

        wait_until(
            "D6 findings",
            lambda: {p["renamed"], p["nested"]} <= findings_by_pid(out).keys(),
            log=pipe.log,
        )
        # Every user workload has been judged: five, the sidecar is inside the workspace too.
        wait_until(
            "the workspace judged",
            lambda: pipe.metrics().get("procsmith_stage_records_in_total", stage="match") >= 5,
            log=pipe.log,
        )
        assert p["shifter"] not in findings_by_pid(out)  # judged clean

        os.kill(p["shifter"], signal.SIGUSR1)  # D8: now it is the miner
        wait_until("the D8 finding", lambda: p["shifter"] in findings_by_pid(out), log=pipe.log)

        found = findings_by_pid(out)
        assert set(found) == {p["renamed"], p["nested"], p["shifter"]}
        for f in found.values():
            ws = f["process"]["workspace"]  # type: ignore[index]
            assert ws["workspace_id"] == REAL_ID  # D5: not "spoofed"
            assert ws["pid"] == p["supervisor"]  # D4: found through the second child
        assert found[p["renamed"]]["process"]["cmdline"] == ["supervisor", "init"]  # type: ignore[index]
        assert found[p["shifter"]]["process"]["cmdline"] == ["shifter", "--wait"]  # type: ignore[index]
