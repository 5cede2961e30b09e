"""A private directory (the ipc run directory, the key directory), opened without following
symlinks and checked on the open descriptor, so nothing can be swapped in between the check
and the use.

How: ``/`` is opened, then every component of the path with ``openat(parent, name,
O_DIRECTORY | O_NOFOLLOW)``; the last one is created with ``mkdirat(parent, name, 0700)`` if it
is missing (and so is any missing parent). A symlink anywhere in the path is refused
(``ELOOP``/``ENOTDIR``). The directory is then judged by ``fstat`` on the descriptor we hold:
a directory, owned by this euid, mode exactly 0700. Whatever the path names later, the
descriptor stays that directory.

ZeroMQ binds and connects ipc endpoints by path, which would look the name up again. So
sockets are addressed through the descriptor: ``ipc:///proc/self/fd/<fd>/<name>.sock``. The
kernel resolves the ``/proc/self/fd/<fd>`` magic link to the very directory we opened, so an
AF_UNIX ``bind``/``connect`` (and libzmq's unlink of a stale file before it binds) happens in
that directory even if the path was renamed or replaced by a symlink meanwhile. It is
short (about 30 bytes), far under the 107 bytes of ``sun_path``, whatever the run directory's
length. libzmq connects from its I/O thread; ``/proc/self`` names the process, not the
thread, so the descriptor is found there too. The descriptor must stay open as long as any
socket addressed through it lives — libzmq reconnects by the same address later — so close
the sockets and ``ctx.term()`` first, ``RunDir.close`` last: a closed number can be reused
for another directory. (libzmq 4.3.5 does not unlink a bound ipc file when the socket
closes, checked; it unlinks a stale one synchronously in ``bind``.) Every process opens and
checks the directory itself; a descriptor number is never passed between processes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from types import TracebackType

PRIVATE_MODE = 0o700
_NOFOLLOW_DIR = os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class RunDirError(Exception):
    """A private directory that cannot be opened safely; the message says why."""


class RunDir:
    """An open, checked private directory: ``path`` for messages, ``fd`` for use."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd

    def socket_path(self, name: str) -> str:
        """``name`` inside the opened directory, reached through its descriptor."""
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"not a plain file name: {name!r}")
        return f"/proc/self/fd/{self.fd}/{name}"

    def ipc_endpoint(self, name: str) -> str:
        """The ZeroMQ address of the endpoint ``name`` in this directory."""
        return f"ipc://{self.socket_path(name + '.sock')}"

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> RunDir:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_private_dir(path: Path | str, *, create: bool = True) -> RunDir:
    """Open ``path`` (absolute) as a private directory of this euid; create it if missing.

    Raises ``RunDirError`` naming the component and the reason: a symlink, not a directory,
    missing, owned by another uid, or a mode other than 0700.
    """
    path = Path(path)
    if not path.is_absolute():
        raise RunDirError(f"{path}: a private directory must be an absolute path")
    parts = [p for p in path.parts[1:] if p not in ("", ".")]
    if not parts or ".." in parts:
        raise RunDirError(f"{path}: must name a directory below / without '..'")
    parent = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        walked = Path("/")
        for part in parts[:-1]:
            walked = walked / part
            if create:
                # A missing parent is made too (0700, like the directory itself); one
                # somebody else made first is walked like any other: what counts is the
                # descriptor of the last component, checked below.
                with contextlib.suppress(FileExistsError):
                    _make(parent, part, walked)
            child = _open_component(parent, part, walked, os.O_PATH)
            os.close(parent)
            parent = child
        last = parts[-1]
        if create:
            with contextlib.suppress(FileExistsError):  # judged below, on what we open
                _make(parent, last, path)
        fd = _open_component(parent, last, path, os.O_RDONLY)
    finally:
        os.close(parent)
    try:
        check_private(fd, path)
    except RunDirError:
        os.close(fd)
        raise
    return RunDir(path, fd)


def _make(parent: int, name: str, shown: Path) -> None:
    try:
        os.mkdir(name, PRIVATE_MODE, dir_fd=parent)
    except FileExistsError:
        raise
    except OSError as err:
        raise RunDirError(f"{shown}: cannot create it: {err.strerror}") from None


def _open_component(parent: int, name: str, shown: Path, mode: int) -> int:
    try:
        return os.open(name, mode | _NOFOLLOW_DIR, dir_fd=parent)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR):
            why = "is a symlink or not a directory (symlinks are not followed)"
        elif err.errno == errno.ENOENT:
            why = "does not exist"
        else:
            why = f"cannot be opened: {err.strerror}"
        raise RunDirError(f"{shown} {why}") from None


def check_private(fd: int, shown: Path) -> os.stat_result:
    """Refuse unless ``fd`` is a directory owned by this euid with mode exactly 0700."""
    st = os.fstat(fd)
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISDIR(st.st_mode):
        raise RunDirError(f"{shown} is not a directory")
    if st.st_uid != os.geteuid() or mode & 0o777 != PRIVATE_MODE:
        raise RunDirError(
            f"{shown} must be owned by uid {os.geteuid()} with mode 0700 "
            f"(it is uid {st.st_uid}, mode {mode:o})"
        )
    return st
