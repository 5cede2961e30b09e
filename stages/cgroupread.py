"""Reading a process's cgroup from procfs, bounded, for the scan and for enforce's checks."""

from __future__ import annotations

import os

from stages.cgroup import CGROUP_MAX_BYTES, ContainerRef, parse_cgroup
from stages.procfs import read_bounded

# What a record carries of the path. The components that attribute a process (pod, then
# container) come first, and a process can only add components below its own cgroup, so
# cutting the end never moves it out of the container it is in.
PATH_MAX_CHARS = 4096


def read_ref(proc_dir: str) -> tuple[ContainerRef, bool]:
    """What ``<proc_dir>/cgroup`` names, and whether the file was longer than the bound.

    A cut file is parsed as far as it goes: its last (cut) line still starts with the
    components that attribute the process. Raises ``OSError`` when it cannot be read.
    """
    data, cut = read_bounded(os.path.join(proc_dir, "cgroup"), CGROUP_MAX_BYTES)
    if not cut:
        return parse_cgroup(data), False
    data = data[: CGROUP_MAX_BYTES - 1]
    ref = parse_cgroup(data)
    if not ref.cgroup_path:  # the cut fell inside a line's "<id>:<controllers>:" prefix
        ref = parse_cgroup(data[: data.rfind(b"\n") + 1])
    return ref, True


def bounded_path(path: str) -> tuple[str, bool]:
    """``path`` cut to ``PATH_MAX_CHARS`` at a component boundary; the flag says it was cut."""
    if len(path) <= PATH_MAX_CHARS:
        return path, False
    head = path[:PATH_MAX_CHARS]
    slash = head.rfind("/")
    return (head[:slash] if slash > 0 else head), True
