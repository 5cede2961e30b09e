"""Memory a process frees goes back to the system, so its RSS follows what it holds.

glibc serves a large allocation (a 256 KiB argv string) with mmap and gives it back on
free, but after the first such free it raises its threshold and serves the next ones from
the heap, which it seldom trims: a stage that decodes a round of huge argv every second
then keeps the high-water mark of every round for good. Fixing the thresholds keeps large
blocks mapped (returned at once when freed) and the heap's top trimmed; ``trim`` gives back
the free pages inside it too, which a stage does when it goes idle (``IdleTrim``).

``release_code`` drops a library's resident code pages from this process: the supervisor
compiles the signatures once (YARA-X's compiler is half of its library, 8 MiB of code that
nothing runs again) and its children, forked after, fault in only the code they run.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger("procsmith.memory")

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MADV_DONTNEED = 4
MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value, kept fixed
TRIM_THRESHOLD = 1 << 20
TRIM_EVERY = 1.0  # seconds: an idle stage trims at most this often


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    except (OSError, TypeError):
        return None


def return_freed_memory() -> bool:
    """Fix glibc's thresholds for this process; False where the C library is not glibc."""
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    return bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and ok


def trim() -> bool:
    """Give the free pages of the heap back (glibc's ``malloc_trim``); False where there is
    no such call."""
    malloc_trim = getattr(_libc(), "malloc_trim", None)
    if malloc_trim is None:
        return False
    malloc_trim.argtypes = (ctypes.c_size_t,)
    malloc_trim(0)
    return True


class IdleTrim:
    """When a stage loop trims: once it has gone idle after work, at most every ``every``
    seconds (a busy stage frees and reuses its memory; trimming it would only cost)."""

    def __init__(self, every: float = TRIM_EVERY) -> None:
        self.every = every
        self._worked = False
        self._last = float("-inf")

    def worked(self) -> None:
        self._worked = True

    def due(self, now: float) -> bool:
        """Whether to trim now, an idle moment; if so, it counts as done."""
        if not self._worked or now - self._last < self.every:
            return False
        self._worked, self._last = False, now
        return True


def _range(text: str) -> tuple[int, int] | None:
    start, _, end = text.partition("-")
    try:
        low, high = int(start, 16), int(end, 16)
    except ValueError:
        return None
    return (low, high) if 0 <= low < high else None


def code_ranges(smaps: str, library: str) -> list[tuple[int, int]]:
    """The read-only ranges of ``library`` (its code and constants; a path as the maps name
    it) that hold only the file's own pages: ``Anonymous`` 0 in smaps, so no page there was
    ever written (the relocated ones are copies of this process's own: those stay)."""
    ranges = []
    current: tuple[int, int] | None = None
    for line in smaps.splitlines():
        head = line.split(maxsplit=5)
        if head and "-" in head[0] and len(head) >= 5:
            current = None
            if len(head) == 6 and head[1] in ("r-xp", "r--p") and head[5] == library:
                current = _range(head[0])
        elif current is not None and line.startswith("Anonymous:"):
            if line.split()[1] == "0":
                ranges.append(current)
            current = None
    return ranges


def release_code(library: str) -> int:
    """Drop this process's resident pages of ``library``'s code and constants (read again
    from the file when used again: nothing was written there); returns how many bytes of
    ranges were released. Nothing is where /proc/self/smaps or madvise is not there."""
    libc = _libc()
    madvise = getattr(libc, "madvise", None)
    try:
        with open("/proc/self/smaps", encoding="utf-8", errors="replace") as f:
            ranges = code_ranges(f.read(), library)
    except OSError:
        return 0
    if madvise is None:
        return 0
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    released = 0
    for start, end in ranges:
        if madvise(start, end - start, _MADV_DONTNEED) == 0:
            released += end - start
    return released
