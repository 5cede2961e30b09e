"""Fresh cgroups shaped like Kubernetes pods and containers, on this machine's cgroupfs.

    with CgroupTree("") as tree:                 # "" is cgroup v2; "name=systemd" a v1 hierarchy
        pod, uid = tree.pod()
        scope, cid = tree.container(pod)
        tree.move(proc.pid, scope)

Everything is made under one ``procsmith-test-<random>`` parent. Leaving kills what is in it
(``cgroup.kill`` on v2, else each pid of ``cgroup.procs``: only processes the caller moved in
can be in cgroups it just made) and removes the directories, leaves first. ``Unavailable``
(with the reason) where there is no such hierarchy or it cannot be written.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
import uuid
from pathlib import Path

from stages.cgroupdir import cgroup_mounts

WAIT_SECONDS = 10.0


class Unavailable(Exception):
    """This machine cannot give the caller a cgroup it may write (the message says why)."""


def procs_of(cgroup: Path) -> list[int]:
    return [int(word) for word in (cgroup / "cgroup.procs").read_text().split()]


class CgroupTree:
    def __init__(self, hierarchy: str = "") -> None:
        if os.geteuid() != 0:
            raise Unavailable("moving processes between cgroups needs root")
        mounts = cgroup_mounts(Path("/proc/self/mountinfo").read_bytes())
        if hierarchy not in mounts:
            name = hierarchy or "cgroup2"
            raise Unavailable(f"no {name} hierarchy is mounted here (have {sorted(mounts)})")
        self.mount = Path(mounts[hierarchy])
        self.top = self.mount / f"procsmith-test-{secrets.token_hex(4)}"

    def __enter__(self) -> CgroupTree:
        try:
            self.top.mkdir()
        except OSError as error:
            raise Unavailable(f"cannot make a cgroup under {self.mount}: {error}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def pod(self, qos: str = "besteffort") -> tuple[Path, str]:
        """A systemd-driver pod slice: (its directory, its UID)."""
        uid = str(uuid.uuid4())
        pod = self.top / f"kubepods-{qos}-pod{uid.replace('-', '_')}.slice"
        pod.mkdir()
        return pod, uid

    def container(self, parent: Path, prefix: str = "cri-containerd-") -> tuple[Path, str]:
        """A container scope under ``parent``: (its directory, its 64-hex id)."""
        cid = secrets.token_hex(32)
        scope = parent / f"{prefix}{cid}.scope"
        scope.mkdir()
        return scope, cid

    def move(self, pid: int, cgroup: Path) -> None:
        try:
            (cgroup / "cgroup.procs").write_text(str(pid))
        except OSError as error:
            raise Unavailable(f"cannot move a process into {cgroup}: {error}") from None

    def remove(self) -> None:
        if not self.top.exists():
            return
        below = [p for p in self.top.rglob("*") if p.is_dir()]
        cgroups = sorted(below, key=lambda p: -len(p.parts))  # leaves first
        cgroups.append(self.top)
        for cgroup in cgroups:
            kill = cgroup / "cgroup.kill"
            if kill.exists():
                kill.write_text("1")
            else:
                for pid in procs_of(cgroup):
                    os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + WAIT_SECONDS
            while procs_of(cgroup):
                if time.monotonic() > deadline:
                    raise AssertionError(f"{cgroup} did not empty")
                time.sleep(0.01)
        for cgroup in cgroups:
            cgroup.rmdir()
