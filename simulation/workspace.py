"""Simulated workspaces on this machine's real /proc, for tests and ``procsmith demo``.

A workspace is a process with argv ``/proc/self/exe ring1`` and GITPOD_ variables in its
environment, whose child has argv ``supervisor init`` and runs the user's processes. Here each
process that has children is a Python interpreter running ``simulation/simproc.py`` under the
name its argv needs; leaves are any program (``sleep``, a stand-in miner).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

_SIMPROC = Path(__file__).with_name("simproc.py")


@dataclass
class SimNode:
    """A process to start. A node with children must have argv[1] naming its script."""

    label: str
    argv: list[str]
    executable: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    children: list[SimNode] = field(default_factory=list)
    # On SIGUSR1 the process execs this (path, argv): same pid, another program.
    exec_on_usr1: tuple[str, list[str]] | None = None

    def spec(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "argv": self.argv,
            "executable": self.executable,
            "env": self.env,
            "children": [c.spec() for c in self.children],
            "exec": None
            if self.exec_on_usr1 is None
            else {"path": self.exec_on_usr1[0], "argv": self.exec_on_usr1[1]},
        }

    @property
    def runs_simproc(self) -> bool:
        return bool(self.children) or self.exec_on_usr1 is not None

    def labels(self) -> list[str]:
        return [self.label, *(lbl for c in self.children for lbl in c.labels())]


def python_node(
    label: str,
    argv: list[str],
    children: list[SimNode],
    *,
    exec_on_usr1: tuple[str, list[str]] | None = None,
    env: dict[str, str] | None = None,
) -> SimNode:
    """A node run by the Python interpreter; ``argv[1]`` becomes its script's file name."""
    return SimNode(label, argv, sys.executable, dict(env or {}), children, exec_on_usr1)


def sleeper(label: str, argv0: str = "sleep") -> SimNode:
    """A leaf that sleeps for a day under the given argv[0]."""
    return SimNode(label, [argv0, "86400"], executable=shutil.which("sleep"))


def workspace(
    users: list[SimNode],
    *,
    workspace_id: str = "sim-ws",
    instance_id: str = "sim-instance",
    owner_id: str = "sim-owner",
    git_url: str = "https://example.com/sim/repo",
    extra_env: dict[str, str] | None = None,
    sidecars: list[SimNode] | None = None,
) -> SimNode:
    """ring1 (with the workspace's GITPOD_ environment) → ``supervisor init`` → ``users``.

    ``sidecars`` are ring1 children started before the supervisor (so with lower pids)."""
    env = {
        "GITPOD_OWNER_ID": owner_id,
        "GITPOD_WORKSPACE_ID": workspace_id,
        "GITPOD_INSTANCE_ID": instance_id,
        "GITPOD_WORKSPACE_CONTEXT_URL": git_url,
        **(extra_env or {}),
    }
    supervisor = python_node("supervisor", ["supervisor", "init"], users)
    return python_node(
        "ring1", ["/proc/self/exe", "ring1"], [*(sidecars or []), supervisor], env=env
    )


def catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (``False`` once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


def _nodes(node: SimNode) -> list[SimNode]:
    return [node, *(n for c in node.children for n in _nodes(c))]


class SimulatedTree:
    """Starts a tree of processes, waits until every one is up, and ends them all.

    Up means started, and for a node that execs on SIGUSR1, its handler installed: until
    then SIGUSR1 would end it (the default action) instead of making it exec.

    ``pids`` maps each label to its pid. Use as a context manager.
    """

    def __init__(self, root: SimNode, ready_timeout: float = 20.0) -> None:
        self.root = root
        self.ready_timeout = ready_timeout
        self.pids: dict[str, int] = {}
        self._dir = Path(tempfile.mkdtemp(prefix="procsmith-sim-"))
        self._report = self._dir / "report"
        self._proc: subprocess.Popen[bytes] | None = None

    def _scripts(self, node: SimNode) -> None:
        if node.runs_simproc:
            shutil.copyfile(_SIMPROC, self._dir / node.argv[1])
        for child in node.children:
            self._scripts(child)

    def start(self) -> SimulatedTree:
        self._scripts(self.root)
        self._report.touch()
        # The root's own variables first: a test can then place a value at a known offset of
        # /proc/<pid>/environ.
        env = {
            **self.root.env,
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONSAFEPATH": "1",
            "SIMPROC_REPORT": str(self._report),
            "SIMPROC_SPEC": json.dumps([c.spec() for c in self.root.children]),
        }
        self._proc = subprocess.Popen(
            self.root.argv,
            executable=self.root.executable,
            env=env,
            cwd=self._dir,
            start_new_session=True,  # one process group to end, whatever happens
        )
        self.pids[self.root.label] = self._proc.pid
        want = set(self.root.labels()) - {self.root.label}
        execs = [n.label for n in _nodes(self.root) if n.exec_on_usr1 is not None]
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            for line in self._report.read_text().splitlines():
                label, pid = line.split()
                self.pids[label] = int(pid)
            if want <= self.pids.keys() and all(
                catches(self.pids[label], signal.SIGUSR1) for label in execs
            ):
                return self
            if self._proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"simulated tree did not start: have {sorted(self.pids)}")

    def stop(self) -> None:
        """SIGTERM the group (each node reaps its children), then SIGKILL what is left."""
        if self._proc is not None and self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGTERM)
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
            except ProcessLookupError:
                self._proc.wait()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> SimulatedTree:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
