"""The files a process runs, found and opened through the process's own view (issue 11).

A process is looked at through ``<proc_root>/<pid>/``, or, when its thread-group leader has
exited and left a zombie (``pthread_exit`` in ``main``), through a live thread's
``<proc_root>/<tid>/`` (a thread id is a valid procfs directory though it is not listed):
its ``exe``, ``maps``, ``cmdline``, ``cwd`` and ``root`` are the process's.

- a mapping is opened through ``map_files/<start>-<end>`` (the very file mapped, even when
  deleted or a memfd), or, where that is refused, ``root/<path>``;
- a script through ``root/<path>`` or ``cwd/<path>``, so it is the file the process sees
  in its own mount namespace and root. (An absolute symlink inside that root is resolved
  against ours: the kernel offers no "resolve beneath" open to Python without openat2.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NamedTuple

from stages.execview import PF_KTHREAD, Mapping, exec_mappings, maps_digest, read_maps, stat_flags
from stages.procfs import OPEN_FLAGS, parse_cmdline, read_bounded, read_stat, skip_reason
from stages.scripts import Script

PF_EXITING = 0x00000004  # include/linux/sched.h: the task is exiting
ARGV_KERNEL_MAX = 6 << 20  # fs/exec.c: argv and environment together, at most 3/4 of 8 MiB
ARGV_WINDOW = 64 << 10  # the argv is judged in windows this long...
ARGV_OVERLAP = 4 << 10  # ...overlapping by this much: a rule's text across a seam is seen
_SYSTEM_DIRS = ("/usr/", "/lib/", "/lib64/", "/bin/", "/sbin/", "/opt/", "/nix/store/")
MAX_TASKS_LOOKED_AT = 64  # a zombie leader's threads tried for a live one


class Target(NamedTuple):
    """A file to judge: what it is to the process, its path as the process sees it, and the
    paths to open it by (the first that opens wins)."""

    role: str
    shown: str
    openers: tuple[str, ...]


def readlink(path: str) -> str:
    """The link's target as text; raises ``OSError``."""
    return os.fsdecode(os.readlink(path))


def is_kernel_thread(flags: int) -> bool:
    return bool(flags & PF_KTHREAD)


def exiting(base: str) -> bool:
    """The process is on its way out (or gone): its files are going, which says nothing."""
    try:
        line = read_stat(base + "stat")
    except OSError:
        return True
    close = line.rfind(b")")
    state = line[close + 2 : close + 3]
    return state in (b"Z", b"X", b"x") or bool(stat_flags(line) & PF_EXITING)


def live_thread_view(proc_root: str, pid: int) -> str | None:
    """``<proc_root>/<tid>/`` of a thread of ``pid`` that still runs, other than the leader."""
    try:
        tids = sorted(int(t) for t in os.listdir(f"{proc_root}/{pid}/task") if t.isdigit())
    except (OSError, ValueError):
        return None
    for tid in [t for t in tids if t != pid][:MAX_TASKS_LOOKED_AT]:
        view = f"{proc_root}/{tid}/"
        if not exiting(view) and os.path.lexists(view + "exe"):
            return view
    return None


def process_view(base: str, pid: int) -> tuple[str | None, str | None, str | None]:
    """(the directory to read the process through, its exe's path, why not)."""
    try:
        return base, readlink(base + "exe"), None
    except OSError as err:
        reason = skip_reason(err)
    if reason != "vanished":
        return None, None, reason  # denied: we may not look at it (counted, no finding)
    view = live_thread_view(os.path.dirname(base.rstrip("/")), pid)
    if view is not None:  # a zombie leader: its live threads run the program
        try:
            return view, readlink(view + "exe"), None
        except OSError:
            return view, None, None
    return None, None, "vanished" if exiting(base) else "no_exe"


def read_argv(view: str) -> list[str]:
    """The argv in the view's cmdline, its first 256 KiB; empty when it cannot be read."""
    try:
        raw, _ = read_bounded(view + "cmdline", 256 << 10)
    except OSError:
        return []
    return parse_cmdline(raw)


def _system_first_key(mapping: Mapping) -> bool:
    return mapping.path.startswith(_SYSTEM_DIRS) and not mapping.path.endswith(" (deleted)")


def mapping_targets(
    view: str, skip: tuple[int, int], limit: int
) -> tuple[list[Target], int, bool, int]:
    """The process's file-backed executable mappings but the file ``skip`` (its exe), at most
    ``limit``; those outside the system directories (and deleted ones, memfds) first, so a
    cut drops system libraries first. Returns (targets, how many were cut, maps was cut, the
    maps' ``maps_digest``). Raises ``OSError`` when maps cannot be read."""
    maps, maps_cut = read_maps(view)
    found = [m for m in exec_mappings(maps) if (m.dev, m.ino) != skip]
    found.sort(key=_system_first_key)  # stable: maps order within each group
    targets = []
    for m in found[:limit]:
        openers = [f"{view}map_files/{m.range_name}"]
        if m.path.startswith("/") and not m.path.endswith(" (deleted)"):
            openers.append(f"{view}root{m.path}")
        targets.append(Target("mapping", m.path, tuple(openers)))
    return targets, max(0, len(found) - limit), maps_cut, maps_digest(maps)


def script_target(view: str, script: Script) -> Target:
    """Where a script named on the command line is, in the process's view."""
    path = script.path
    if path.startswith("/"):
        return Target("script", path, (f"{view}root{path}",))
    try:
        cwd = readlink(view + "cwd")
    except OSError:
        cwd = "."
    return Target("script", f"{cwd.rstrip('/')}/{path}", (f"{view}cwd/{path}",))


def argv_windows(path: str, start: int, window: int = ARGV_WINDOW) -> Iterator[list[str]]:
    """The argv in ``path`` (a cmdline file) from byte ``start`` on, as overlapping windows
    of arguments, up to the kernel's limit: never more than one window held. A window's
    first and last arguments may be cut. Stops quietly when the file cannot be read."""
    try:
        fd = os.open(path, OPEN_FLAGS)
    except OSError:
        return
    try:
        offset = max(0, start - ARGV_OVERLAP)
        while offset < ARGV_KERNEL_MAX:
            try:
                chunk = os.pread(fd, window, offset)
            except OSError:
                return
            if not chunk:
                return
            yield chunk.rstrip(b"\0").decode("utf-8", "backslashreplace").split("\0")
            if len(chunk) < window:
                return
            offset += window - ARGV_OVERLAP
    finally:
        os.close(fd)
