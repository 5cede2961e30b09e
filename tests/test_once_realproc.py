"""`procsmith once` against this machine's real /proc with a simulated workspace."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest

from simulation.workspace import SimulatedTree, python_node, sleeper, workspace

pytestmark = pytest.mark.realproc


def test_once_finds_exactly_the_simulated_workspace() -> None:
    tree = workspace(
        [sleeper("a", "editor"), python_node("b", ["python3", "worker"], [sleeper("b-child")])],
        workspace_id="ws-real",
        instance_id="inst-real",
        owner_id="owner-real",
    )
    with SimulatedTree(tree) as sim:
        out = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "once", "--proc-root", "/proc"],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        pids = dict(sim.pids)
    records = [orjson.loads(line) for line in out.splitlines()]
    assert [r["pid"] for r in records] == sorted([pids["a"], pids["b"], pids["b-child"]])
    by_pid = {r["pid"]: r for r in records}
    assert by_pid[pids["a"]]["cmdline"] == ["editor", "86400"]
    assert by_pid[pids["b-child"]]["ppid"] == pids["b"]
    for rec in records:
        assert rec["kind"] == "user_workload"
        assert rec["path"] == f"/proc/{rec['pid']}/exe"
        assert rec["workspace"] == {
            "owner_id": "owner-real",
            "workspace_id": "ws-real",
            "instance_id": "inst-real",
            "git_url": "https://example.com/sim/repo",
            "pid": pids["supervisor"],
        }
    # Every process the test started has ended.
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
