"""What a process runs, as the scan and match stages read it (issue 11).

- ``exec_id``: a digest of the stat line's exec marks (``stages.statline.exec_marks``): every
  exec, even of the same binary, changes it (the new image's addresses, comm, the exec flag),
  and any two reads of one exec's stat line agree on it.
- ``maps_id``: a digest of the identities (device, inode) of the file-backed executable
  mappings in ``/proc/<pid>/maps``: a program run through the dynamic loader, an
  ``LD_PRELOAD`` library, a ``dlopen`` (a memfd one included) all change it.
- The stat line's flags (``PF_KTHREAD``), virtual size and argv span.

Everything here takes bytes a hostile process may have shaped (a file name in maps can hold
any byte but a newline) and raises nothing on them.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

import xxhash

from stages.procfs import read_bounded
from stages.statline import exec_marks, marks_digest, stat_number

PF_KTHREAD = 0x00200000  # include/linux/sched.h: the task is a kernel thread
MAPS_MAX_BYTES = 4 << 20  # ~40,000 mappings; the kernel's default limit is 65,530 (counted)

# One line of /proc/<pid>/maps: start-end perms offset major:minor inode [path]. Executable
# ("x" third in perms) and file-backed (inode not 0). The path is the rest of the line.
# Each pattern starts at the newline before its line (the text is searched with one put in
# front): a literal start is what lets the engine skip to candidate lines, 4x faster than
# "^" under re.M, and as safe: a path holds no newline (the kernel escapes it), so nothing
# in a file's name can pass for a line of its own.
_EXEC_LINE = re.compile(
    rb"\n([0-9a-f]+)-([0-9a-f]+) ..x. [0-9a-f]+ ([0-9a-f]+):([0-9a-f]+) ([1-9][0-9]*) +([^\n]*)"
)
# The same lines, only their "dev inode" part: what the digest is made of.
_EXEC_IDENTITY = re.compile(rb"\n[0-9a-f]+-[0-9a-f]+ ..x. [0-9a-f]+ ([0-9a-f:]+ [1-9][0-9]*)")


class Mapping(NamedTuple):
    """One file-backed executable mapping: its address range (the name of its entry in
    ``map_files``), the file's identity and its path as the process sees it."""

    start: int
    end: int
    dev: int
    ino: int
    path: str

    @property
    def range_name(self) -> str:
        return f"{self.start:x}-{self.end:x}"


def exec_id(stat_line: bytes) -> int:
    """The digest of one exec's marks; 0 only for an empty line."""
    if not stat_line:
        return 0
    return marks_digest(exec_marks(stat_line))


def _field(stat_line: bytes, index: int) -> int:
    """Field ``index`` (1-based, as proc(5) numbers them) as an int; 0 when absent or odd."""
    close = stat_line.rfind(b")")
    if close < 0:
        return 0
    return stat_number(stat_line[close + 1 :].split(None, index - 2), index)


def stat_flags(stat_line: bytes) -> int:
    """Field 9, the task's flags."""
    return _field(stat_line, 9)


def stat_vsize(stat_line: bytes) -> int:
    """Field 23, the virtual memory size: any mmap or munmap (a ``dlopen``) changes it."""
    return _field(stat_line, 23)


def arg_span(stat_line: bytes) -> int:
    """arg_end - arg_start (fields 48 and 49): the length of the argv area; 0 if unknown."""
    start, end = _field(stat_line, 48), _field(stat_line, 49)
    return end - start if end > start else 0


def argv_length(raw: bytes, cut: bool, span: int) -> int:
    """The cmdline's full length: what was read, or when that was cut, the argv area the
    stat line gives (``arg_span``; at least one byte more than was read). The scan and the
    read at exec both count it so, so that both give a process the same filter key."""
    return max(len(raw) + 1, span) if cut else len(raw)


def maps_digest(maps: bytes) -> int:
    """The digest of the sorted, distinct (device, inode) of the executable file mappings;
    0 when there is none (a kernel thread, a zombie, no maps file)."""
    ids = sorted(set(_EXEC_IDENTITY.findall(b"\n" + maps)))
    return xxhash.xxh64_intdigest(b"\n".join(ids)) if ids else 0


def exec_mappings(maps: bytes) -> list[Mapping]:
    """The file-backed executable mappings, one per file (its first range), in maps order."""
    seen: set[tuple[int, int]] = set()
    out = []
    for m in _EXEC_LINE.finditer(b"\n" + maps):
        if len(m[1]) > 16 or len(m[2]) > 16 or len(m[3]) > 8 or len(m[4]) > 8 or len(m[5]) > 20:
            continue  # not the kernel's: ignore rather than trust
        dev = os.makedev(int(m[3], 16), int(m[4], 16))  # as fstat's st_dev says it
        ident = (dev, int(m[5]))
        if ident in seen:
            continue
        seen.add(ident)
        path = m[6].decode("utf-8", "backslashreplace")
        out.append(Mapping(int(m[1], 16), int(m[2], 16), dev, ident[1], path))
    return out


def read_maps(base: str, limit: int = MAPS_MAX_BYTES) -> tuple[bytes, bool]:
    """``<base>maps``, bounded; the flag says it was cut. Raises ``OSError``."""
    return read_bounded(base + "maps", limit, 1 << 16)
