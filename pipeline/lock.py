"""One pipeline per run directory: an exclusive ``flock`` the supervisor holds while it runs.

Taken before anything is bound or cleared, so a second ``procsmith run`` with the same run
directory is refused (exit 2, naming the holder's pid) and the first keeps its sockets. The
lock belongs to the open file, which only the supervisor holds (its children close it), so
it goes the moment the supervisor dies, however it dies.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from pipeline.config import ConfigError

LOCK_FILE = "supervisor.lock"
_PID_BYTES = 32  # what is read of the holder's pid: a number and a newline


class RunDirLock:
    """The held lock of ``run_dir``; ``fd`` is to be closed in every forked child."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_FILE
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            self.fd = os.open(self.path, flags, 0o600)
        except OSError as err:
            raise ConfigError(
                f"transport.run_dir: cannot open {self.path}: {err.strerror}"
            ) from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(self.fd)
            os.close(self.fd)
            raise ConfigError(
                f"run directory {run_dir} is in use by another procsmith (pid {holder}); "
                "stop it first or give this one another transport.run_dir"
            ) from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _holder(fd: int) -> str:
    text = os.pread(fd, _PID_BYTES, 0).decode("ascii", "replace").strip()
    return text if text.isdigit() else "unknown"
