"""The cgroup provider end to end: ``procsmith run`` on this machine's /proc with providers
gitpod and cgroup finds stand-in miners in a fresh kubepods-shaped cgroup that are in no
Gitpod tree (with the pod uid and container id), and kill-workspace kills each one's container
and nothing else.

Two ways into a workspace from outside its tree, as on a real node:
- exec in: a process started by something else (here pytest; on a node ``runc exec`` under
  ``kubectl exec``) joins the container's cgroup and then execs the miner, like runc does;
- double fork: a shell in the container starts the miner in a subshell and both exit, so the
  miner is orphaned away from every tree it was in.

``workspaces.cgroup_patterns`` limits the provider to this test's cgroups, so no other process
on the machine is a workspace (and none can be penalised). Skipped where cgroupfs cannot be
written.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from simulation.cgroups import CgroupTree, Unavailable
from simulation.elfbins import ElfBins
from simulation.harness import Pipeline, wait_until
from stages.procfs import is_running

pytestmark = pytest.mark.realproc


@pytest.fixture
def tree() -> Iterator[CgroupTree]:
    try:
        with CgroupTree("") as made:
            yield made
    except Unavailable as why:
        pytest.skip(str(why))


def exec_in(tree: CgroupTree, cgroup: Path, argv: list[str]) -> subprocess.Popen[bytes]:
    """A process that joins ``cgroup`` and only then execs ``argv`` (what runc exec does)."""
    shell = subprocess.Popen(
        ["sh", "-c", 'read go; exec "$@"', "sh", *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    tree.move(shell.pid, cgroup)
    assert shell.stdin is not None
    shell.stdin.write(b"go\n")
    shell.stdin.close()
    return shell


def double_fork(tree: CgroupTree, cgroup: Path, argv: list[str]) -> int:
    """The pid of ``argv`` started in ``cgroup`` by a subshell that exits: an orphan."""
    script = 'read go; ("$@" </dev/null >/dev/null 2>&1 & echo $!)'
    shell = subprocess.Popen(
        ["sh", "-c", script, "sh", *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert shell.stdin is not None and shell.stdout is not None
    tree.move(shell.pid, cgroup)
    shell.stdin.write(b"go\n")
    shell.stdin.close()
    pid = int(shell.stdout.readline())
    shell.wait(timeout=10)
    return pid


def run_pipeline(tree: CgroupTree, providers: str, penalty: str) -> Pipeline:
    pipe = Pipeline(
        "/proc",
        {
            "PROCSMITH_WORKSPACES__PROVIDERS": providers,
            "PROCSMITH_WORKSPACES__CGROUP_PATTERNS": f'["/{tree.top.name}/*"]',
            "PROCSMITH_ENFORCE__PENALTIES__VERY": penalty,
        },
    )
    pipe.env["PROCSMITH_ENFORCE__OUTPUT"] = f'["{pipe.run_dir / "findings.jsonl"}"]'
    return pipe


def findings_by_pid(pipe: Pipeline) -> dict[int, dict[str, Any]]:
    path = pipe.run_dir / "findings.jsonl"
    if not path.exists():
        return {}
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    return {f["process"]["pid"]: f["process"] for f in lines}


def test_miners_that_entered_or_left_the_tree_are_found_in_their_pod(
    tree: CgroupTree, elf_bins: ElfBins
) -> None:
    """gitpod and cgroup together, penalties "log": other workspaces on this shared machine
    (other tests' simulated Gitpod ones) may be found too, and are left alone."""
    pod, uid = tree.pod()
    (a, cid_a), (b, cid_b) = tree.container(pod), tree.container(pod)
    pipe = run_pipeline(tree, '["gitpod", "cgroup"]', "log")
    miner = [str(elf_bins.miner), "--wait"]
    outside = subprocess.Popen(miner)  # the same binary in no workspace
    started = [outside]
    try:
        with pipe:
            pipe.wait_flowing()
            entered = exec_in(tree, a, miner)
            started.append(entered)
            orphan = double_fork(tree, b, miner)
            found = wait_until(
                "both miners found",
                lambda: (f := findings_by_pid(pipe)).keys() >= {entered.pid, orphan} and f,
                log=pipe.log,
            )
            assert outside.pid not in findings_by_pid(pipe)
        for pid, container in ((entered.pid, cid_a), (orphan, cid_b)):
            ws = found[pid]["workspace"]
            assert (ws["provider"], ws["pod_uid"], ws["container_id"]) == ("cgroup", uid, container)
            assert ws["workspace_id"] == uid
        assert found[entered.pid]["ppid"] == os.getpid()  # started from outside any workspace
        assert found[orphan]["ppid"] not in (os.getpid(), pipe.pid)  # orphaned
    finally:
        for proc in started:
            proc.kill()
            proc.wait()


def test_kill_workspace_kills_each_miner_s_container_and_nothing_else(
    tree: CgroupTree, elf_bins: ElfBins
) -> None:
    """cgroup alone here: with gitpod on, a kill penalty would reach other tests' simulated
    Gitpod workspaces on this shared machine. cgroup_patterns keeps it to this test's cgroups."""
    pod, _uid = tree.pod()
    (a, _), (b, _), (c, _) = (tree.container(pod) for _ in range(3))
    pipe = run_pipeline(tree, '["cgroup"]', "kill-workspace")
    miner = [str(elf_bins.miner), "--wait"]
    outside = subprocess.Popen(miner)  # the same binary in no workspace: left alone
    spared = subprocess.Popen(["sleep", "600"])  # in container c: another container of the pod
    started = [outside, spared]
    try:
        tree.move(spared.pid, c)
        with pipe:
            pipe.wait_flowing()
            entered = exec_in(tree, a, miner)
            started.append(entered)
            neighbour = subprocess.Popen(["sleep", "600"])  # in container a with the miner
            started.append(neighbour)
            tree.move(neighbour.pid, a)
            orphan = double_fork(tree, b, miner)
            wait_until(
                "both miners killed",
                lambda: not (is_running(entered.pid) or is_running(orphan)),
                log=pipe.log,
            )
            wait_until(
                "the neighbour killed with its container", lambda: not is_running(neighbour.pid)
            )
            assert is_running(spared.pid) and is_running(outside.pid)
            m = pipe.metrics()
            assert (
                m.get("procsmith_enforce_penalties_total", action="kill-workspace", result="ok")
                == 2
            )
        assert sorted(findings_by_pid(pipe)) == sorted([entered.pid, orphan])
    finally:
        for proc in started:
            proc.kill()
            proc.wait()
