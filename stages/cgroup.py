"""Which container (and Kubernetes pod) a process is in, from the text of /proc/<pid>/cgroup.

Pure and stdlib-only: the caller reads the file (bounded) and hands over its bytes. The kernel
writes one line per hierarchy, ``<id>:<controllers>:<path>``: ``0::<path>`` is cgroup v2, the
others are v1 hierarchies (``4:memory:/docker/<id>``, ``1:name=systemd:/...``); a hybrid host
has both. Container runtimes and the kubelet put a container's processes in a cgroup whose
path names it, in a few well-known shapes:

    systemd driver   /kubepods.slice/kubepods-burstable.slice/
                       kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope
                     (crio-<id>.scope for CRI-O, docker-<id>.scope for dockershim/cri-dockerd)
    cgroupfs driver  /kubepods/burstable/pod<uid>/<id>        (guaranteed: /kubepods/pod<uid>/)
    containerd v1    /kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>  (literal colons)
    docker           /system.slice/docker-<id>.scope, /docker/<id>
    podman           /machine.slice/libpod-<id>.scope[/container], /libpod_parent/libpod-<id>

and nested (kind, docker-in-docker): ``/docker/<node>/kubepods/...`` or
``/system.slice/docker-<node>.scope/kubelet.slice/kubelet-kubepods.slice/...``.
``crio-conmon-<id>`` and ``libpod-conmon-<id>`` hold the runtime's monitor, not the container.

Rules (why they are what they are):
- The outermost pod wins, and after it the first container inside it; without a pod, the
  outermost container. What a process creates below its own cgroup (a delegated cgroup, a
  systemd inside a container) can therefore neither move it out of its container nor into
  another one: it can only add components below the ones that attribute it.
- A pod or container found beneath another container is reported with ``nested=True`` (a kind
  node's pods look like that; so would names forged by a container that may write cgroupfs).
- A kubepods pod under a systemd user manager (``user@<uid>.service``, delegated to that user)
  and not inside a container is not a pod: the kubelet never puts pods there, a user can.
- Paths read from inside another cgroup namespace start with ``/..``; those components are
  skipped (the systemd slice names and container scopes still say what they are).
- Nothing here raises: input that is too long, not a cgroup file, or that names nothing
  known gives ``NO_CONTAINER`` (or a value with only ``cgroup_path``/``unit`` set).
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import NamedTuple

# /proc/<pid>/cgroup holds one line per mounted hierarchy: a few hundred bytes, some KiB with
# deep paths. Anything longer is not the kernel's file (or was not read whole): refused.
CGROUP_MAX_BYTES = 64 * 1024
_MAX_LINES = 64  # the kernel has at most ~16 v1 hierarchies plus the v2 one

RUNTIMES = ("containerd", "cri-o", "docker", "podman")
_SCOPE_RUNTIME = {"cri-containerd": "containerd", "crio": "cri-o", "docker": "docker"}
_SCOPE_RUNTIME["libpod"] = "podman"

_HEX64 = re.compile(r"[0-9a-f]{64}")
# A pod UID: a dashed UUID (cgroupfs), the same with underscores (systemd escapes "-", which
# means "child of" in slice names), or 32 hex digits (static pods: the UID is a hash).
_UID = (
    r"(?:[0-9a-f]{8}(?P<sep>[-_])[0-9a-f]{4}(?P=sep)[0-9a-f]{4}(?P=sep)[0-9a-f]{4}(?P=sep)"
    r"[0-9a-f]{12}|[0-9a-f]{32})"
)
# kubepods-pod<uid>.slice, kubepods-besteffort-pod<uid>.slice; kind prefixes "kubelet-".
_SYSTEMD_POD = re.compile(
    rf"(?:[a-z0-9]+-)*kubepods(?:-(?P<qos>besteffort|burstable))?-pod(?P<uid>{_UID})\.slice"
)
_CGROUPFS_POD = re.compile(rf"pod(?P<uid>{_UID})")
_CGROUPFS_POD_PARENTS = frozenset({"kubepods", "besteffort", "burstable", ".."})
_SCOPE = re.compile(r"(?P<rt>cri-containerd|crio|docker|libpod)-(?P<id>[0-9a-f]{64})(?:\.scope)?")
_USER_MANAGER = re.compile(r"user@[0-9]+\.service")
_UNIT_SUFFIXES = (".scope", ".service", ".slice")
_DELETED = " (deleted)"  # v2: the kernel appends it when the cgroup was removed


class ContainerRef(NamedTuple):
    """Where a process sits: its cgroup, and the container and pod that cgroup names.

    ``container_id`` is set exactly when the process is in a container (``in_container``);
    ``pod_uid`` may be set without it (a process in a pod's cgroup but outside its
    containers, such as CRI-O's conmon when it is moved into the pod slice).
    """

    cgroup_path: str = ""  # the v2 path, or the v1 path that named the container; "" if none
    version: int = 0  # 2 or 1: which kind of line cgroup_path came from; 0 for none
    controllers: str = ""  # the v1 line's controllers ("memory", "name=systemd"); "" for v2
    runtime: str = ""  # one of RUNTIMES, or "" (not in a container, or the path does not say)
    container_id: str = ""  # 64 lowercase hex digits, or ""
    container_cgroup: str = ""  # cgroup_path cut after the container's own component
    pod_uid: str = ""  # dashed UUID (or 32 hex digits for a static pod), or ""
    qos: str = ""  # guaranteed, burstable or besteffort when pod_uid is set and the path says
    unit: str = ""  # the innermost systemd .scope or .service on the path, or ""
    nested: bool = False  # the pod or container was found beneath another container

    @property
    def in_container(self) -> bool:
        return bool(self.container_id)


NO_CONTAINER = ContainerRef()


def _normal_uid(uid: str) -> str:
    return uid.replace("_", "-")


class _Walk:
    """One pass over a path's components, keeping the first pod and the container in it."""

    def __init__(self) -> None:
        self.runtime = ""
        self.container_id = ""
        self.container_end = -1  # index of the component that named the container
        self.pod_uid = ""
        self.qos = ""
        self.nested = False
        self.unit = ""

    def container(self, index: int, runtime: str, container_id: str) -> None:
        # In a pod, the first container in it is the one (deeper ones are that container's
        # own); without a pod, the outermost container is the one this host knows.
        if self.container_id:
            return
        self.runtime, self.container_id, self.container_end = runtime, container_id, index

    def pod(self, uid: str, qos: str, under_user_manager: bool) -> None:
        if self.pod_uid:
            return  # the outermost pod is the one this node's kubelet manages
        if under_user_manager and not self.container_id:
            return  # pods never live in a user's delegated subtree: a forged name
        if self.container_id:  # a pod inside a container: kind, or a forgery (see nested)
            self.nested = True
            self.runtime, self.container_id, self.container_end = "", "", -1
        self.pod_uid, self.qos = _normal_uid(uid), qos


def _walk(path: str) -> _Walk:
    walk = _Walk()
    parts = path.split("/")
    under_user_manager = False
    previous = ""
    for index, part in enumerate(parts):
        if not part:
            continue
        if part.endswith((".scope", ".service")):
            walk.unit = part
        if _USER_MANAGER.fullmatch(part):
            under_user_manager = True
        slice_part, _, rest = part.partition(":")
        pod = _SYSTEMD_POD.fullmatch(slice_part)
        if pod is not None:
            walk.pod(pod["uid"], pod["qos"] or "guaranteed", under_user_manager)
        elif previous in _CGROUPFS_POD_PARENTS and (pod := _CGROUPFS_POD.fullmatch(part)):
            qos = {"kubepods": "guaranteed", "..": ""}.get(previous, previous)
            walk.pod(pod["uid"], qos, under_user_manager)
        if rest:  # <slice>:<runtime prefix>:<id>, what containerd writes with systemd paths
            prefix, _, container_id = rest.partition(":")
            if prefix in _SCOPE_RUNTIME and _HEX64.fullmatch(container_id):
                walk.container(index, _SCOPE_RUNTIME[prefix], container_id)
        elif scope := _SCOPE.fullmatch(part):
            walk.container(index, _SCOPE_RUNTIME[scope["rt"]], scope["id"])
        elif _HEX64.fullmatch(part):  # cgroupfs: /docker/<id>, /kubepods/.../pod<uid>/<id>
            walk.container(index, "docker" if previous == "docker" else "", part)
        previous = part
    return walk


def _ref(path: str, version: int, controllers: str, walk: _Walk) -> ContainerRef:
    container_cgroup = ""
    if walk.container_id:
        container_cgroup = "/".join(path.split("/")[: walk.container_end + 1])
    return ContainerRef(
        cgroup_path=path,
        version=version,
        controllers=controllers,
        runtime=walk.runtime,
        container_id=walk.container_id,
        container_cgroup=container_cgroup,
        pod_uid=walk.pod_uid,
        qos=walk.qos if walk.pod_uid else "",
        unit=walk.unit,
        nested=walk.nested,
    )


def ref_from_path(path: str, version: int = 2, controllers: str = "") -> ContainerRef:
    """What one cgroup path (a line's path, without the ``<id>:<controllers>:``) names."""
    return _ref(path, version, controllers, _walk(path))


def _lines(data: bytes) -> list[tuple[str, str]] | None:
    """(controllers, path) of each line; ``None`` if any line is not a cgroup line."""
    text = data.decode("utf-8", errors="replace")  # U+FFFD never matches an ASCII pattern
    lines = text.splitlines()
    if len(lines) > _MAX_LINES:
        return None
    parsed: list[tuple[str, str]] = []
    for line in lines:
        hierarchy, sep1, rest = line.partition(":")
        controllers, sep2, path = rest.partition(":")  # a path may itself hold colons
        if not (sep1 and sep2 and hierarchy.isdecimal() and hierarchy.isascii()):
            return None
        if (hierarchy == "0") != (controllers == "") or not path.startswith("/"):
            return None
        path = path.removesuffix(_DELETED)
        parsed.append(("" if hierarchy == "0" else controllers, path))
    return parsed


def parse_cgroup(data: bytes) -> ContainerRef:
    """What ``/proc/<pid>/cgroup`` (its bytes) says of the process's container and pod.

    The v2 line decides when it names a container or pod; otherwise the v1 lines are tried,
    ``name=systemd`` first, then in file order. ``NO_CONTAINER`` for input over
    ``CGROUP_MAX_BYTES`` or with any line that is not ``<id>:<controllers>:/<path>``.
    """
    if len(data) > CGROUP_MAX_BYTES:
        return NO_CONTAINER
    lines = _lines(data)
    if not lines:
        return NO_CONTAINER
    v2 = [path for controllers, path in lines if controllers == ""]
    v1 = sorted(
        ((c, p) for c, p in lines if c != ""), key=lambda line: "name=systemd" not in line[0]
    )
    for path in v2[:1]:
        walk = _walk(path)
        if walk.container_id or walk.pod_uid:
            return _ref(path, 2, "", walk)
    for controllers, path in v1:
        walk = _walk(path)
        if walk.container_id or walk.pod_uid:
            return _ref(path, 1, controllers, walk)
    # Not in a container: keep the path (and its unit) for unit and cgroup selectors.
    if v2:
        return _ref(v2[0], 2, "", _walk(v2[0]))
    controllers, path = v1[0]
    return _ref(path, 1, controllers, _walk(path))


def unit_names(ref: ContainerRef) -> tuple[str, ...]:
    """The systemd units (slices, services, scopes) on the cgroup path, outermost first."""
    return tuple(part for part in ref.cgroup_path.split("/") if part.endswith(_UNIT_SUFFIXES))


def unit_matches(ref: ContainerRef, pattern: str) -> bool:
    """Whether any systemd unit on the path matches a glob (``user@*.service``, ``ci-*.scope``).

    Matched per component and case-sensitively, so ``*`` never crosses a ``/``.
    """
    return any(fnmatchcase(unit, pattern) for unit in unit_names(ref))


def cgroup_matches(ref: ContainerRef, pattern: str) -> bool:
    """Whether the whole cgroup path matches a glob (``/kubepods.slice/*``); ``*`` crosses ``/``."""
    return bool(ref.cgroup_path) and fnmatchcase(ref.cgroup_path, pattern)
