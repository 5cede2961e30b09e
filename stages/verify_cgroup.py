"""Is a process (still) in a cgroup workspace? Re-read from procfs, never taken from a record.

``in_workspace`` is the cgroup provider's rule for enforce's re-verification (SPEC §2: no stage
trusts a record enough to hurt a process on its word alone): the pid must still be the process
that started at ``starttime``, and its cgroup must still name the workspace's container (and
pod). Meant to be registered under the provider name ``cgroup`` where enforce looks rules up
by provider (``stages.verify``, once it exists).
"""

from __future__ import annotations

import os

from stages.base.schema import Workspace
from stages.cgroup import ContainerRef
from stages.cgroupread import read_ref
from stages.pidcheck import still_same
from stages.procfs import skip_reason


def current_ref(proc_root: str, pid: int) -> ContainerRef | str:
    """What the pid's cgroup names now, or why it cannot be read (``vanished``, ``denied``,
    ``io_error``)."""
    try:
        ref, _cut = read_ref(os.path.join(proc_root, str(pid)))
    except OSError as err:
        return skip_reason(err)
    return ref


def same_container(ref: ContainerRef, workspace: Workspace) -> str | None:
    """``None`` when ``ref`` is in the workspace's container; else ``left_workspace``."""
    if workspace.provider != "cgroup" or not workspace.container_id:
        return "no_container"
    if ref.container_id != workspace.container_id or ref.pod_uid != workspace.pod_uid:
        return "left_workspace"
    return None


def in_workspace(proc_root: str, pid: int, starttime: int, workspace: Workspace) -> str | None:
    """``None`` when ``pid`` is still the process of ``starttime`` and in ``workspace``'s
    container; else why not: ``reused``, ``vanished``, ``left_workspace``, ``no_container``
    (the workspace is not a container's), or why procfs could not tell."""
    proc_dir = os.path.join(proc_root, str(pid))
    problem = still_same(proc_dir, starttime)
    if problem is not None:
        return problem
    ref = current_ref(proc_root, pid)
    if isinstance(ref, str):
        return ref
    # The stat line again: a pid reused between the two reads would show a new starttime.
    return same_container(ref, workspace) or still_same(proc_dir, starttime)
