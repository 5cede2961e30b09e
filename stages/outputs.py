"""Where enforce writes findings: files written whole or not at all, and stdout.

A file is opened for each line (``O_APPEND``), written, optionally ``fsync``ed and closed.
Holding no file open between findings means a rotated log is followed, and a filesystem can
be remounted read-only without procsmith keeping it busy. A line that cannot be written
whole (the disk filled up half-way) is cut off again, so the file never holds a torn line.
"""

from __future__ import annotations

import contextlib
import errno
import os
from typing import BinaryIO

STDOUT = "-"


class WriteFailed(Exception):
    """A line not written; ``reason`` is a bounded label (the errno's name)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _reason(err: OSError) -> str:
    return errno.errorcode.get(err.errno or 0, "EIO")


class FileOutput:
    """A file findings are appended to, one whole line at a time."""

    def __init__(self, path: str, *, fsync: bool = True) -> None:
        self.name = path
        self.fsync = fsync

    def check(self) -> None:
        """Raises OSError if the file cannot be opened for appending (it is created)."""
        os.close(os.open(self.name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600))

    def write(self, line: bytes) -> None:
        """Append ``line`` whole, or raise WriteFailed leaving the file as it was."""
        try:
            fd = os.open(self.name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as err:
            raise WriteFailed(_reason(err)) from None
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(line)
                while view:
                    n = os.write(fd, view)
                    if n <= 0:  # not seen on Linux, but a loop must not spin on it
                        raise OSError(errno.EIO, "no progress")
                    view = view[n:]
                if self.fsync:
                    os.fsync(fd)
            except OSError as err:
                # Take back what part of the line got out, so no reader sees half a finding.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise WriteFailed(_reason(err)) from None
        finally:
            os.close(fd)


class StreamOutput:
    """A stream (stdout) the lines are written and flushed to; it cannot be cut back."""

    def __init__(self, stream: BinaryIO, name: str = STDOUT) -> None:
        self.name = name
        self.stream = stream

    def check(self) -> None:
        pass

    def write(self, line: bytes) -> None:
        try:
            self.stream.write(line)
            self.stream.flush()
        except (OSError, ValueError) as err:  # ValueError: written after close
            raise WriteFailed(_reason(err) if isinstance(err, OSError) else "closed") from None


Output = FileOutput | StreamOutput
