"""Penalties: signalling a process only once it is confirmed, and running a command.

A kill first takes a pidfd, which pins one process for good, and only then reads the pid's
procfs ``stat`` to confirm it is the process the finding means. Whatever happens to the pid
after that, the signal goes to the confirmed process or nowhere. The procfs root must be the
one of this process's pid namespace (``/proc``), or the check proves nothing.

Every failure is a ``PenaltyFailed`` whose ``reason`` is one of ``REASONS``.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from typing import Literal

from stages.pidcheck import current_starttime

# What enforce does with a finding of a level. "log" only writes it.
Action = Literal["log", "kill-process", "kill-workspace", "exec"]

REASONS = (
    "vanished",  # the process (or supervisor) is gone
    "reused",  # the pid names another process now
    "unconfirmed",  # its stat could not be read or parsed
    "no_workspace",  # kill-workspace for a process outside any workspace
    "no_container",  # kill-workspace: a cgroup workspace whose container cgroup is not found
    "left_workspace",  # kill-workspace: the process's cgroup no longer names the container
    "unsafe_pid",  # pid 1, ourselves or our parent
    "denied",  # not allowed to signal it
    "timeout",  # exec: the command ran past exec_timeout
    "exit_status",  # exec: the command exited non-zero
    "spawn_error",  # exec: the command could not be started
    "error",  # anything else the kernel said
)


class PenaltyFailed(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason


# Given the target's starttime now, why it is not the process to signal (or None).
Confirm = Callable[[int], str | None]


def starttime_of(proc_root: str, pid: int) -> int:
    """The pid's starttime now; raises ``PenaltyFailed`` when it cannot be read."""
    now = current_starttime(os.path.join(proc_root, str(pid)))
    if now == "vanished":
        raise PenaltyFailed("vanished")
    if isinstance(now, str):
        raise PenaltyFailed("unconfirmed", now)
    return now


def kill_confirmed(
    proc_root: str, pid: int, confirm: Confirm, signum: int = signal.SIGKILL
) -> None:
    """Send ``signum`` to ``pid`` if ``confirm(starttime)`` finds nothing wrong with it."""
    if pid <= 1 or pid in (os.getpid(), os.getppid()):
        raise PenaltyFailed("unsafe_pid", f"refusing to signal pid {pid}")
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        raise PenaltyFailed("vanished") from None
    except OSError as err:
        raise PenaltyFailed("error", err.strerror or str(err)) from None
    try:
        problem = confirm(starttime_of(proc_root, pid))
        if problem is not None:
            raise PenaltyFailed(problem)
        signal.pidfd_send_signal(pidfd, signum)
    except ProcessLookupError:
        raise PenaltyFailed("vanished") from None
    except PermissionError:
        raise PenaltyFailed("denied") from None
    except OSError as err:
        raise PenaltyFailed("error", err.strerror or str(err)) from None
    finally:
        os.close(pidfd)


def same_starttime(expected: int) -> Confirm:
    """The process itself: its starttime is the one the finding recorded."""
    return lambda now: None if now == expected else "reused"


def started_by(starttime: int) -> Confirm:
    """A workspace's supervisor: it started no later than a process of its tree did.

    The finding carries the supervisor's pid but not its starttime. A supervisor is an
    ancestor of every process in its workspace, so it started first; a pid reused after the
    supervisor died belongs to a process that started after that, and so after the finding's
    process.
    """
    return lambda now: None if now <= starttime else "reused"


def run_command(argv: Sequence[str], stdin: bytes, timeout: float) -> None:
    """Run ``argv`` (no shell) with ``stdin``; raises ``PenaltyFailed`` unless it exits 0.

    Its stdout is discarded (ours may carry the findings); its stderr is ours.
    """
    try:
        done = subprocess.run(
            list(argv),
            input=stdin,
            stdout=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise PenaltyFailed("timeout", f"{argv[0]} ran past {timeout}s") from None
    except OSError as err:
        raise PenaltyFailed("spawn_error", f"{argv[0]}: {err.strerror or err}") from None
    if done.returncode != 0:
        raise PenaltyFailed("exit_status", f"{argv[0]} exited {done.returncode}")
