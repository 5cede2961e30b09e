"""Reading a process's cgroup from procfs, bounded, for the scan and for enforce's checks."""

from __future__ import annotations

import os

from stages.cgroup import CGROUP_MAX_BYTES, ContainerRef, parse_cgroup
from stages.procfs import read_bounded

# What a record carries of the path. The components that attribute a process (pod, then
# container) come first, and a process can only add components below its own cgroup, so
# cutting the end never moves it out of the container it is in.
PATH_MAX_CHARS = 4096


_CACHE_MAX = 4096  # distinct cgroup files remembered: a node has about one per container


def read_ref(proc_dir: str) -> tuple[ContainerRef, bool]:
    """What ``<proc_dir>/cgroup`` names, and whether the file was longer than the bound.

    A cut file is parsed as far as it goes: its last (cut) line still starts with the
    components that attribute the process. Raises ``OSError`` when it cannot be read.
    """
    data, cut = read_bounded(os.path.join(proc_dir, "cgroup"), CGROUP_MAX_BYTES)
    return _parse(data, cut), cut


def _parse(data: bytes, cut: bool) -> ContainerRef:
    if not cut:
        return parse_cgroup(data)
    data = data[: CGROUP_MAX_BYTES - 1]
    ref = parse_cgroup(data)
    if not ref.cgroup_path:  # the cut fell inside a line's "<id>:<controllers>:" prefix
        ref = parse_cgroup(data[: data.rfind(b"\n") + 1])
    return ref


class CgroupPaths:
    """The attributing path of a process's cgroup file (``bounded_path`` of what it names),
    parsed once per distinct file: every process of a container has the same one."""

    def __init__(self, limit: int = _CACHE_MAX) -> None:
        self.limit = limit
        self._paths: dict[bytes, tuple[str, bool]] = {}

    def read(self, proc_dir: str) -> tuple[str, bool]:
        """(path, whether the file or the path was cut); raises ``OSError``."""
        data, cut = read_bounded(os.path.join(proc_dir, "cgroup"), CGROUP_MAX_BYTES)
        found = self._paths.get(data)
        if found is None:
            if len(self._paths) >= self.limit:
                self._paths.clear()
            path, cut_path = bounded_path(_parse(data, cut).cgroup_path)
            found = self._paths[data] = (path, cut or cut_path)
        return found


def bounded_path(path: str) -> tuple[str, bool]:
    """``path`` cut to ``PATH_MAX_CHARS`` at a component boundary; the flag says it was cut."""
    if len(path) <= PATH_MAX_CHARS:
        return path, False
    head = path[:PATH_MAX_CHARS]
    slash = head.rfind("/")
    return (head[:slash] if slash > 0 else head), True
