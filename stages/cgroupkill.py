"""kill-workspace for a cgroup workspace: every process of the finding's container.

First the finding's process is re-verified (``stages.verify_cgroup``): still the process of the
finding's starttime, still in the workspace's container. Its container's cgroup directory comes
from the cgroup path read in that check (``stages.cgroupdir.container_dir``) on the cgroup mount
of that path's hierarchy. On cgroup v2 ``cgroup.kill`` there kills the whole container at once,
including processes forked while it runs. Where that file is missing (v1, Linux < 5.14) or
cannot be written (a read-only mount), every pid in ``cgroup.procs`` of the directory and the
ones below it gets SIGKILL through a pidfd, each only once its own cgroup is confirmed to name
the container (``stages.penalty.kill_confirmed``).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from stages.base.schema import Workspace
from stages.cgroup import ContainerRef
from stages.cgroupdir import MOUNTINFO_MAX_BYTES, cgroup_mounts, container_dir
from stages.cgroupread import read_ref
from stages.penalty import PenaltyFailed, kill_confirmed
from stages.procfs import read_bounded
from stages.verify_cgroup import current_ref, in_workspace

HOST_CGROUP_MOUNT = "/sys/fs/cgroup"  # where the host mounts its cgroup tree
PROCS_MAX_BYTES = 1 << 20  # cgroup.procs of one cgroup: 100,000 pids fit
MAX_CGROUPS = 1024  # a container's cgroup and those below it that are walked


def mount_map(proc_root: str, cgroup_root: str = "") -> dict[str, str]:
    """Hierarchy (``""`` for v2, a v1 controller) → where its mount is reachable here.

    ``cgroup_root`` empty: this process's own mounts. Otherwise the host's tree mounted at
    ``cgroup_root`` (a DaemonSet's ``/host/sys/fs/cgroup``): the host's mounts are read from
    its init's ``mountinfo`` under ``proc_root`` and moved from ``/sys/fs/cgroup`` to there;
    a host whose mounts cannot be read is taken to be v2 with its mount at ``cgroup_root``.
    """
    source = "/proc/self/mountinfo" if not cgroup_root else f"{proc_root}/1/mountinfo"
    try:
        data, _cut = read_bounded(source, MOUNTINFO_MAX_BYTES)
    except OSError:
        data = b""
    mounts = cgroup_mounts(data)
    if not cgroup_root:
        return mounts
    moved = {}
    for key, point in mounts.items():
        if point == HOST_CGROUP_MOUNT or point.startswith(HOST_CGROUP_MOUNT + "/"):
            moved[key] = cgroup_root.rstrip("/") + point[len(HOST_CGROUP_MOUNT) :]
    return moved or {"": cgroup_root}


def _directory(ref: ContainerRef, mounts: dict[str, str]) -> str:
    if ref.version == 2:
        mount = mounts.get("")
    else:
        mount = next((mounts[c] for c in ref.controllers.split(",") if c in mounts), None)
    found = container_dir(ref.cgroup_path, mount) if mount else None
    if found is None:
        raise PenaltyFailed("no_container", f"no cgroup directory for {ref.cgroup_path!r}")
    return found


def _pids_below(directory: str) -> list[int]:
    """Every pid in ``cgroup.procs`` of ``directory`` and the cgroups below it (bounded)."""
    pids: list[int] = []
    for walked, (top, _dirs, _files) in enumerate(os.walk(directory)):
        if walked >= MAX_CGROUPS:
            break
        try:
            data, _cut = read_bounded(os.path.join(top, "cgroup.procs"), PROCS_MAX_BYTES)
        except OSError:
            continue  # removed while walking
        pids.extend(int(word) for word in data.split() if word.isdigit() and len(word) < 8)
    return pids


def _own_container() -> str:
    try:
        ref, _cut = read_ref("/proc/self")
    except OSError:
        return ""
    return ref.container_id


def kill_container(
    proc_root: str,
    mounts: dict[str, str],
    pid: int,
    starttime: int,
    workspace: Workspace,
    *,
    use_cgroup_kill: bool = True,
) -> int:
    """SIGKILL every process of the container ``pid`` (of ``starttime``) is in, once it is
    confirmed to be ``workspace``'s. Returns how many were signalled (``-1``: all at once,
    through ``cgroup.kill``). Raises ``PenaltyFailed``."""
    problem = in_workspace(proc_root, pid, starttime, workspace)
    if problem is not None:
        raise PenaltyFailed(problem)
    if workspace.container_id == _own_container():
        raise PenaltyFailed("unsafe_pid", "refusing to kill the container procsmith runs in")
    ref = current_ref(proc_root, pid)
    if isinstance(ref, str):
        raise PenaltyFailed(ref)
    directory = _directory(ref, mounts)
    if use_cgroup_kill and ref.version == 2:
        try:
            with open(os.path.join(directory, "cgroup.kill"), "wb", buffering=0) as f:
                f.write(b"1")
            return -1
        except OSError:
            pass  # missing (before 5.14) or read-only: one pid at a time
    killed = 0
    for target in _pids_below(directory):
        confirm = _confirm(proc_root, target, workspace, starttime if target == pid else None)
        try:
            kill_confirmed(proc_root, target, confirm)
        except PenaltyFailed as failed:
            if target == pid and failed.reason != "vanished":
                raise
            continue  # another process: gone, or no longer in the container
        killed += 1
    return killed


def _confirm(
    proc_root: str, pid: int, workspace: Workspace, starttime: int | None
) -> Callable[[int], str | None]:
    """The check ``kill_confirmed`` makes once it holds the pidfd: the finding's process by
    its starttime, every process by its cgroup naming the container now."""

    def check(now: int) -> str | None:
        if starttime is not None and now != starttime:
            return "reused"
        return in_workspace(proc_root, pid, now, workspace)

    return check
