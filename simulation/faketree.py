"""Fake procfs trees of a node's size, written to disk with ``simulation.fakeproc``."""

from __future__ import annotations

from pathlib import Path

from simulation.fakeproc import FakeProcfs

WORKSPACE_SIZE = 200  # processes per workspace: ring1, supervisor and 198 user processes


def user_argv(pid: int) -> list[str]:
    return ["node", "/workspace/app/server.js", f"--worker={pid}"]


def node_tree(root: Path, n: int) -> FakeProcfs:
    """``n`` processes like a node's: init, a tenth of them daemons outside any workspace,
    the rest workspaces of ``WORKSPACE_SIZE`` whose user processes nest up to three deep."""
    fs = FakeProcfs(root)
    fs.add(1, 0, ["/sbin/init"], exe="init")
    pid = 2
    for i in range(n // 10):
        fs.add(pid, 1, ["/usr/sbin/daemon", f"--id={i}"], exe="daemon")
        pid += 1
    while pid + 2 <= n:
        ring1, supervisor = pid, pid + 1
        fs.workspace(ring1, supervisor, workspace_id=f"ws-{ring1}")
        pid += 2
        parent = supervisor
        for u in range(min(WORKSPACE_SIZE - 2, n - pid + 1)):
            fs.add(pid, parent if u % 3 else supervisor, user_argv(pid), exe="node")
            parent = pid
            pid += 1
    while pid <= n:
        fs.add(pid, 1, ["/usr/sbin/daemon", "--late"], exe="daemon")
        pid += 1
    return fs
