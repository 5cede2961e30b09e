"""Where a container's cgroup is on the cgroupfs mount, so its processes can be listed or killed.

Pure: paths in, a path (or ``None``) out; nothing here touches the filesystem. The caller
writes ``1`` to ``<dir>/cgroup.kill`` (v2, Linux 5.14+) or signals each pid of
``<dir>/cgroup.procs``, after checking each one is still the process it judged.
"""

from __future__ import annotations

from stages.cgroup import ref_from_path

DEFAULT_CGROUP_ROOT = "/sys/fs/cgroup"
MOUNTINFO_MAX_BYTES = 1024 * 1024  # a node with thousands of mounts stays well under this
# v1 mount options that are not controllers
_NOT_CONTROLLERS = frozenset({"rw", "ro", "xattr", "noprefix", "clone_children", "cpuset_v2_mode"})


def _expand_slice(name: str) -> list[str]:
    """systemd puts ``a-b-c.slice`` at ``a.slice/a-b.slice/a-b-c.slice``: its name is its path."""
    words = name.removesuffix(".slice").split("-")
    return ["-".join(words[: n + 1]) + ".slice" for n in range(len(words))]


def _absolute(parts: list[str]) -> list[str] | None:
    """Components of a path that may start with ``..`` (read in another cgroup namespace)."""
    ups = 0
    while ups < len(parts) and parts[ups] == "..":
        ups += 1
    rest = parts[ups:]
    if not ups:
        return rest
    if not rest:
        return None
    first = rest[0]
    if first.endswith(".slice") and ":" not in first:  # systemd driver: rebuild from its name
        return _expand_slice(first) + rest[1:]
    if first in ("besteffort", "burstable") or first.startswith("pod"):
        return ["kubepods", *rest]  # cgroupfs driver: the kubelet's fixed layout
    return None


def container_dir(cgroup_path: str, root: str = DEFAULT_CGROUP_ROOT) -> str | None:
    """The directory of the cgroup of the container that ``cgroup_path`` is in, under ``root``.

    ``cgroup_path`` is a v2 path from ``/proc/<pid>/cgroup`` (or a v1 path, with ``root`` that
    hierarchy's mount). The directory is the container's own (``.../cri-containerd-<id>.scope``,
    not a child such as podman's ``.../libpod-<id>.scope/container``), so ``cgroup.kill`` there
    reaches everything in the container. A path read from inside another cgroup namespace
    (``/../../kubepods-...``) is rebuilt when its layout says where it is (systemd slice names,
    the kubelet's cgroupfs layout). ``None`` when the path names no container, or when its
    components could not be a real directory's (empty, ``.``, ``..`` inside, NUL, undecodable).
    """
    ref = ref_from_path(cgroup_path)
    if not ref.container_id or not root.startswith("/"):
        return None
    parts = _absolute(ref.container_cgroup.split("/")[1:])
    if not parts:
        return None
    for part in parts:
        if part in ("", ".", "..") or "\0" in part or "\ufffd" in part:
            return None
    return root.rstrip("/") + "/" + "/".join(parts)


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes."""
    for escaped, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(escaped, char)
    return field


def cgroup_mounts(mountinfo: bytes) -> dict[str, str]:
    """Mount points of the cgroup hierarchies in ``/proc/<pid>/mountinfo``.

    Key ``""`` is the cgroup2 mount (``/sys/fs/cgroup`` on a v2 host, ``/sys/fs/cgroup/unified``
    on a hybrid one); each v1 controller (``memory``, ``cpu``, ``name=systemd``) maps to its
    hierarchy's mount. The first mount of each wins. Empty for input over
    ``MOUNTINFO_MAX_BYTES``; lines that are not mountinfo lines are skipped.
    """
    if len(mountinfo) > MOUNTINFO_MAX_BYTES:
        return {}
    mounts: dict[str, str] = {}
    for line in mountinfo.decode("utf-8", errors="replace").splitlines():
        fields = line.split(" ")
        if "-" not in fields:
            continue
        dash = fields.index("-")
        if dash < 5 or len(fields) < dash + 4:
            continue
        mount_point, fstype, super_options = _unescape(fields[4]), fields[dash + 1], fields[-1]
        if fstype == "cgroup2":
            mounts.setdefault("", mount_point)
        elif fstype == "cgroup":
            for option in super_options.split(","):
                if option not in _NOT_CONTROLLERS and (
                    option.startswith("name=") or "=" not in option
                ):
                    mounts.setdefault(option, mount_point)
    return mounts
