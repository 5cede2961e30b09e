"""Is a finding's target still inside the finding's workspace? Asked of procfs, by enforce,
right before a penalty (issue #12: no record is trusted enough to hurt a process on its word).

A rule takes the procfs root, the target (pid and the starttime the finding recorded) and
the finding's workspace, reads procfs itself, and returns ``None`` when it confirms the
target, or the reason it does not (a bounded label, one of ``REASONS``). Rules are chosen
by the finding's workspace provider (``rule_for``); ``cgroup``'s is that the process is still
in the workspace's container (``stages.verify_cgroup``); ``gitpod`` is SPEC §1's:

- the pid's starttime is the finding's (the same process, not a reused pid);
- walking its ppid chain (at most ``MAX_DEPTH`` steps) reaches the workspace's ``pid``,
  its supervisor, whose argv is exactly ``supervisor init``;
- the supervisor's parent is a ring1 (argv ``/proc/self/exe ring1 …``) whose environment
  has the finding's ``GITPOD_WORKSPACE_ID`` (read as classify does, D5).

Of several ``supervisor init`` children of one ring1, classify names the earliest-started
the supervisor (D4); this rule confirms a finding that names any of them. It does not list
the ring1's children to tell which: every one of them, and all they start, is inside the
same ring1's tree and so the same workspace (a later one is a user's own process, D6), and
keeping penalties inside the named workspace is what the rule is for.

Everything is read with bounded reads and nothing raises: an unreadable file is a reason.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from stages.base.schema import Workspace
from stages.procfs import (
    is_ring1,
    parse_cmdline,
    parse_gitpod_env,
    read_bounded,
    read_stat,
    skip_reason,
)
from stages.statline import parse_stat
from stages.verify_cgroup import in_workspace as in_container

MAX_DEPTH = 4096  # a workspace's tree deeper than this is not walked: refused as too_deep
ENVIRON_MAX_BYTES = 1 << 20  # the scan's default bound on an environ read
CMDLINE_MAX_BYTES = 1 << 16  # ``supervisor init`` and ``/proc/self/exe ring1`` are short
SUPERVISOR_ARGV = ["supervisor", "init"]

REASONS = (
    "no_workspace",  # the finding names no workspace
    "vanished",  # the target (or an ancestor) is gone
    "reused",  # the pid is another process now (its starttime differs)
    "denied",  # procfs would not tell us
    "unreadable",  # a procfs file could not be read or parsed
    "outside",  # the ppid chain does not reach the workspace's supervisor
    "too_deep",  # the chain is longer than MAX_DEPTH
    "not_supervisor",  # the workspace's pid is not a `supervisor init`
    "not_ring1",  # the supervisor's parent is not a ring1
    "other_workspace",  # the ring1's GITPOD_WORKSPACE_ID is not the finding's
    "unknown_provider",  # no rule of that name
    "no_container",  # cgroup: the workspace names no container
    "left_workspace",  # cgroup: the process is in another container (or none) now
    "io_error",  # cgroup: its stat or cgroup file could not be read
    "malformed_stat",  # cgroup: its stat line could not be parsed
)

# procfs root, target pid, its starttime in the finding, the finding's workspace → reason
Rule = Callable[[str, int, int, Workspace | None], str | None]


class _Unconfirmed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _stat(proc_root: str, pid: int) -> tuple[int, int]:
    """(ppid, starttime) of ``pid`` now."""
    try:
        raw = read_stat(os.path.join(proc_root, str(pid), "stat"))
    except OSError as err:
        reason = skip_reason(err)
        raise _Unconfirmed("unreadable" if reason == "io_error" else reason) from None
    stat = parse_stat(raw)
    if stat is None:
        raise _Unconfirmed("unreadable")
    return stat.ppid, stat.starttime


def _read(proc_root: str, pid: int, name: str, limit: int) -> tuple[bytes, bool]:
    try:
        return read_bounded(os.path.join(proc_root, str(pid), name), limit)
    except OSError as err:
        reason = skip_reason(err)
        raise _Unconfirmed("unreadable" if reason == "io_error" else reason) from None


def _cmdline(proc_root: str, pid: int) -> list[str]:
    data, cut = _read(proc_root, pid, "cmdline", CMDLINE_MAX_BYTES)
    return [] if cut else parse_cmdline(data)


def _walk_to(proc_root: str, pid: int, ppid: int, ancestor: int) -> int:
    """Up the ppid chain from ``pid`` (whose ppid is ``ppid``) to ``ancestor``; returns the
    ancestor's ppid. Bounded: ``MAX_DEPTH`` steps."""
    at, parent = pid, ppid
    for _ in range(MAX_DEPTH):
        if at == ancestor:
            return parent
        if parent <= 1 or parent == at:
            raise _Unconfirmed("outside")
        at = parent
        parent, _started = _stat(proc_root, at)
    raise _Unconfirmed("too_deep")


def _check_gitpod(proc_root: str, pid: int, starttime: int, workspace: Workspace) -> None:
    ppid, now = _stat(proc_root, pid)
    if now != starttime:
        raise _Unconfirmed("reused")
    ring1 = _walk_to(proc_root, pid, ppid, workspace.pid)  # the supervisor's parent
    if _cmdline(proc_root, workspace.pid) != SUPERVISOR_ARGV:
        raise _Unconfirmed("not_supervisor")
    if not is_ring1(_cmdline(proc_root, ring1)):
        raise _Unconfirmed("not_ring1")
    data, cut = _read(proc_root, ring1, "environ", ENVIRON_MAX_BYTES)
    env = parse_gitpod_env(data, truncated=cut)
    if env.get("GITPOD_WORKSPACE_ID", "") != workspace.workspace_id:  # as classify reads it
        raise _Unconfirmed("other_workspace")


def gitpod_rule(
    proc_root: str, pid: int, starttime: int, workspace: Workspace | None
) -> str | None:
    """SPEC §1's gitpod rule, from procfs (see the module docstring)."""
    if workspace is None:
        return "no_workspace"
    try:
        _check_gitpod(proc_root, pid, starttime, workspace)
    except _Unconfirmed as err:
        return err.reason
    return None


def cgroup_rule(
    proc_root: str, pid: int, starttime: int, workspace: Workspace | None
) -> str | None:
    """The cgroup provider's rule: the process is still in the workspace's container."""
    if workspace is None:
        return "no_workspace"
    return in_container(proc_root, pid, starttime, workspace)


RULES: dict[str, Rule] = {"gitpod": gitpod_rule, "cgroup": cgroup_rule}
DEFAULT_PROVIDER = "gitpod"


def _unknown(proc_root: str, pid: int, starttime: int, workspace: Workspace | None) -> str:
    return "unknown_provider"


def rule_for(provider: str = DEFAULT_PROVIDER) -> Rule:
    """The rule of ``provider``; one that refuses everything when there is none."""
    return RULES.get(provider, _unknown)
