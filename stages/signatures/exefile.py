"""Reading an executable for matching: regular files only, never more than a bound.

``/proc/<pid>/exe`` of a real process is always a regular file, but a fake procfs tree, a
file named on the command line or a hostile link can be a FIFO (a read would block), a device
(``/dev/zero`` never ends; opening some devices has effects) or a huge file. So the path is
``stat``-ed before it is opened, opened non-blocking, ``fstat``-ed again (it may have been
swapped in between), and read up to a bound; what is past the bound is not read.
"""

from __future__ import annotations

import os
import stat
from typing import NamedTuple

from stages.procfs import skip_reason

_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
_READ_CHUNK = 1 << 30  # Linux returns at most ~2 GiB from one read anyway


class Unjudgeable(Exception):
    """A file that could not be judged; ``reason`` is a bounded metric label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason


class Identity(NamedTuple):
    """What makes two opens the same executable: the verdict cache key.

    ctime, not mtime: a user can set a file's mtime back after rewriting it in place
    (``touch -r``), but every write and every ``utime`` moves ctime, which only the kernel
    sets (issue 11, row 7).
    """

    dev: int
    ino: int
    size: int
    ctime_ns: int


class Executable(NamedTuple):
    """The first ``max_bytes`` of a regular file; ``truncated`` says there was more."""

    data: bytes
    identity: Identity
    truncated: bool


def _identity(st: os.stat_result) -> Identity:
    return Identity(st.st_dev, st.st_ino, st.st_size, st.st_ctime_ns)


def _refuse(err: OSError) -> Unjudgeable:
    return Unjudgeable(skip_reason(err), err.strerror or str(err))


def open_regular(path: str) -> tuple[int, Identity]:
    """An open descriptor of ``path`` if it is a regular file, and its identity.

    Raises ``Unjudgeable`` (``vanished``, ``denied``, ``io_error``, ``not_regular``).
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise Unjudgeable("not_regular", "not a regular file")
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as err:
        raise _refuse(err) from None
    except ValueError:  # a NUL byte in the path
        raise Unjudgeable("io_error", "invalid path") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Unjudgeable("not_regular", "not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd, _identity(st)


def read_prefix(fd: int, size_hint: int, max_bytes: int) -> tuple[bytes, bool]:
    """Up to ``max_bytes`` from offset 0, and whether the file holds more than that."""
    chunks: list[bytes] = []
    total = 0
    # Ask for what fstat said first, so a small file is one read and no large allocation.
    want = min(max(size_hint, 1), max_bytes)
    try:
        while total < max_bytes:
            chunk = os.pread(fd, min(want, _READ_CHUNK), total)
            if not chunk:
                return b"".join(chunks), False
            chunks.append(chunk)
            total += len(chunk)
            want = max_bytes - total
        more = os.pread(fd, 1, total)
    except OSError as err:
        raise _refuse(err) from None
    return b"".join(chunks), bool(more)


def tail_window(max_bytes: int) -> int:
    """How much of the end of a file larger than ``max_bytes`` is read too: a quarter of the
    bound (32 MiB at the default 128 MiB), so strings appended past the head are seen."""
    return max(1, max_bytes // 4)


def read_windows(fd: int, size: int, max_bytes: int) -> tuple[list[bytes], bool]:
    """The file's bytes as the windows that are judged, and whether some were left out: the
    whole file when it fits in ``max_bytes``; else its first ``max_bytes`` and its last
    ``tail_window(max_bytes)`` bytes (each judged as its own buffer)."""
    head, truncated = read_prefix(fd, size, max_bytes)
    if not truncated:
        return [head], False
    end = max(size, max_bytes + 1)
    start = max(max_bytes, end - tail_window(max_bytes))
    try:
        tail = os.pread(fd, end - start, start)
    except OSError as err:
        raise _refuse(err) from None
    return [head, tail] if tail else [head], start > len(head)  # a middle was skipped


def read_executable(path: str, max_bytes: int) -> Executable:
    """Open, check and read ``path``; raises ``Unjudgeable``."""
    fd, identity = open_regular(path)
    try:
        data, truncated = read_prefix(fd, identity.size, max_bytes)
    finally:
        os.close(fd)
    return Executable(data, identity, truncated)
