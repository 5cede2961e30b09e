"""Read a process the moment it execs, and pin its executable.

On an ``Exec`` event the process is read at once — stat, cmdline, the executable's identity
and, for a ring1 candidate, its environment — with the scan's own parsers, so the record is
the one a scan round would have made, only milliseconds after the exec instead of up to an
interval later. Its executable is opened and the descriptor kept (``stages.pins``), so the
file can be judged after the process is gone.

The read is bracketed by two stat reads: if the second shows another process under the pid
(starttime) or another exec (``stages.statline.exec_marks``), what was read in between may mix
two programs, and the read is dropped (``exec_raced``/``pid_reused``): the later exec has its
own event. A process that is a zombie by the second stat exited during the read: its cmdline,
if not empty, was read while it lived and the read stands; an empty one was read after its
exit (``exited``), not an empty argv.
"""

from __future__ import annotations

import os
import time
from collections import Counter

import msgspec

from stages.execview import arg_span, argv_length, exec_id, stat_flags
from stages.pins import PinnedExecutables
from stages.procfs import (
    OPEN_FLAGS,
    is_ring1,
    parse_cmdline,
    parse_gitpod_env,
    read_bounded,
    read_stat,
    skip_reason,
)
from stages.statline import Stat, exec_marks, parse_stat


class ExecProcess(msgspec.Struct, array_like=True, frozen=True):
    """A process read at its exec; ``stages.events.raw_record`` makes the ``RawProcess``
    the other stages take (``exe_pin`` becomes its ``pin``).

    ``exec_ns``: the kernel's time of the exec event (CLOCK_MONOTONIC ns); ``read_ns``: when
    this read finished, on the same clock. ``exe_pin``: where the pinned executable can be
    reopened (``/proc/<reader>/fd/<n>``), ``""`` when it is not pinned; the opener must check
    that the file has ``exe_dev``/``exe_ino``. ``cmdline_cut``: cut at its bound.
    """

    pid: int
    ppid: int
    starttime: int
    comm: str
    cmdline: list[str]
    exe_dev: int = 0
    exe_ino: int = 0
    gitpod_env: dict[str, str] | None = None
    exe_pin: str = ""
    exec_ns: int = 0
    read_ns: int = 0
    cmdline_cut: bool = False
    # As a poll round's read fills them in (stages.execview), for the same filter key.
    exec_id: int = 0
    # Always 0 (not read), as at a poll round's first read: read this early (half a
    # millisecond after the exec) the maps hold the program and its loader, seldom its
    # libraries yet. Match reads them when it judges the process.
    maps_id: int = 0
    argv_bytes: int = 0
    flags: int = 0


class ExecReader:
    """Reads processes under ``proc_root`` at their exec; pins executables in ``pins``.

    ``skipped`` counts reads given up by reason (``vanished``, ``denied``, ``io_error``,
    ``malformed_stat``, ``pid_reused``, ``exec_raced``, ``exited``); ``truncated`` counts
    cmdline/environ reads cut at their bound.
    """

    def __init__(
        self,
        proc_root: str,
        pins: PinnedExecutables,
        *,
        cmdline_max_bytes: int = 256 * 1024,
        environ_max_bytes: int = 1024 * 1024,
    ) -> None:
        self.proc_root = os.path.abspath(proc_root)
        self.pins = pins
        self.cmdline_max_bytes = cmdline_max_bytes
        self.environ_max_bytes = environ_max_bytes
        self.skipped: Counter[str] = Counter()
        self.truncated: Counter[str] = Counter()

    def read(self, pid: int, exec_ns: int = 0) -> ExecProcess | None:
        """The process ``pid`` as it is now, or ``None`` (counted in ``skipped``)."""
        base = f"{self.proc_root}/{pid}/"
        exe_fd = -1
        try:
            first = read_stat(base + "stat")
            exe_fd = _open_exe(base)
            raw, cut = read_bounded(base + "cmdline", self.cmdline_max_bytes)
            cmdline = parse_cmdline(raw)
            env = self._environ(base) if is_ring1(cmdline) else None
            second = read_stat(base + "stat")
        except OSError as err:
            _close(exe_fd)
            self.skipped[skip_reason(err)] += 1
            return None
        stat, again = parse_stat(first), parse_stat(second)
        problem = _inconsistent(stat, again, first, second, cmdline)
        if problem or stat is None:
            _close(exe_fd)
            self.skipped[problem or "malformed_stat"] += 1
            return None
        if cut:
            self.truncated["cmdline"] += 1
        dev = ino = 0
        pin = ""
        if exe_fd >= 0:
            key = (pid, stat.starttime)
            ident = self.pins.pin(key, exe_fd)
            if ident is not None:
                dev, ino = ident
                pin = self.pins.path(key) or ""
            else:
                dev, ino = _identity(base)  # not pinned (not regular, too large): as scan does
        return ExecProcess(
            pid,
            stat.ppid,
            stat.starttime,
            stat.comm,
            cmdline,
            dev,
            ino,
            env,
            pin,
            exec_ns,
            time.monotonic_ns(),
            cut,
            exec_id(first),
            0,  # maps_id: not read here (see the field)
            argv_length(raw, cut, arg_span(first)),
            stat_flags(first),
        )

    def _environ(self, base: str) -> dict[str, str] | None:
        try:
            raw, cut = read_bounded(base + "environ", self.environ_max_bytes)
        except OSError:
            return None  # "its environ can be read" is part of what makes a workspace
        if cut:
            self.truncated["environ"] += 1
        return parse_gitpod_env(raw, truncated=cut)


def _open_exe(base: str) -> int:
    """A descriptor of the process's executable; -1 when it has none (a kernel thread, a
    zombie). Non-blocking: in a fake tree ``exe`` may be a FIFO."""
    try:
        return os.open(base + "exe", OPEN_FLAGS)
    except OSError:
        return -1


def _identity(base: str) -> tuple[int, int]:
    try:
        info = os.stat(base + "exe")
    except OSError:
        return 0, 0
    return info.st_dev, info.st_ino


def _close(fd: int) -> None:
    if fd >= 0:
        os.close(fd)


def _inconsistent(
    stat: Stat | None, again: Stat | None, first: bytes, second: bytes, cmdline: list[str]
) -> str:
    """Why the two stat reads around a read say it cannot be trusted; ``""`` if they agree."""
    if stat is None or again is None:
        return "malformed_stat"
    if stat.starttime != again.starttime:
        return "pid_reused"
    if _exiting(second):
        # It exited during the read: an exiting process's stat has no memory image to compare,
        # and an empty cmdline was read after its exit; a non-empty one while it lived.
        return "" if cmdline else "exited"
    if exec_marks(first) != exec_marks(second):
        return "exec_raced"
    return ""


_PF_EXITING = 0x4  # task flag set as do_exit begins, before the memory image is released


def _exiting(stat: bytes) -> bool:
    """Whether a stat line is of a process that is exiting or has exited (a zombie)."""
    fields = stat[stat.rfind(b")") + 1 :].split(None, 7)
    if len(fields) < 7:
        return False
    flags = fields[6]
    if fields[0] in (b"Z", b"X"):
        return True
    return flags.isdigit() and len(flags) <= 20 and bool(int(flags) & _PF_EXITING)
