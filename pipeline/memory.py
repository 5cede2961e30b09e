"""Memory a stage frees goes back to the system, so its RSS follows what it holds.

glibc serves a large allocation (a 256 KiB argv string) with mmap and gives it back on
free, but after the first such free it raises its threshold and serves the next ones from
the heap, which it seldom trims: a stage that decodes a round of huge argv every second
then keeps the high-water mark of every round for good. Fixing the thresholds keeps large
blocks mapped (returned at once when freed) and the heap trimmed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("procsmith.memory")

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value, kept fixed
TRIM_THRESHOLD = 1 << 20


def return_freed_memory() -> bool:
    """Fix glibc's thresholds for this process; False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    return bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and ok
