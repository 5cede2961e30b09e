"""Workspace providers: which workspace a process is in, by rules other than Gitpod's tree.

``gitpod`` is the tree rule of ``stages.classify`` (D4-D6). ``cgroup`` attributes a process by
the cgroup path scan read (``RawProcess.cgroup``): a process in a container's cgroup is in
that container's workspace wherever its parent is, so one that entered from outside the tree
(``kubectl exec``, ``docker exec``: children of the runtime) or double-forked out of it keeps
its workspace. Providers run in order, each on the processes the ones before left outside.

    providers = Providers(["gitpod", "cgroup"], CgroupSelectors(namespaces=("jupyter",)),
                          meter, pods=PodDirectory(url, meter))
    classification = providers.find(index, rnd.procs)

Which cgroups are workspaces (``CgroupSelectors``): every container (any runtime; a pod's
containers are its pod's workspace) and every process in a systemd unit that ``units`` names;
then each selector given must agree: ``cgroup_patterns`` (globs on the whole path), and for
pods ``namespaces`` and ``pod_labels`` (from the pod list). A pod the list does not name (no
list, the kubelet down, a pod newer than the list) is attributed by its UID alone and counted:
being judged is never lost to a lookup.

A Gitpod workspace runs in a pod too: a process outside its tree but in the same pod (or
container) as a process of that workspace is attributed to that Gitpod workspace.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import NamedTuple, Protocol

from stages.base.catalog import PODS_UNRESOLVED, WORKSPACES_BY_PROVIDER
from stages.base.meter import Meter
from stages.base.schema import Kind, RawProcess, Workspace
from stages.cgroup import ContainerRef, cgroup_matches, ref_from_path, unit_names
from stages.classify import Classification, Node, classify
from stages.podlist import PodMeta

PROVIDERS = ("gitpod", "cgroup")
_REF_CACHE_MAX = 8192  # distinct cgroup paths remembered (a node has one per container)


class PodSource(Protocol):
    """Pod metadata by UID (``stages.podlist.PodDirectory``), fetched again when due."""

    def pods(self, wanted: set[str] | None = None) -> Mapping[str, PodMeta]: ...


class CgroupSelectors(NamedTuple):
    cgroup_patterns: tuple[str, ...] = ()
    units: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    pod_labels: tuple[tuple[str, str], ...] = ()

    @property
    def need_pods(self) -> bool:
        """Whether a selector needs pod metadata (the pod list)."""
        return bool(self.namespaces or self.pod_labels)


class CgroupResult(NamedTuple):
    inside: dict[int, tuple[Kind, Workspace]]
    workspaces: int  # distinct pods, containers outside pods and units
    unresolved: int  # pods selectors wanted metadata of and the pod list did not have


class _Group(NamedTuple):
    key: tuple[str, str, str]  # (pod uid, container id, unit): which workspace record
    ref: ContainerRef


class RefCache:
    """``ref_from_path`` remembered per path: a round has far fewer paths than processes."""

    def __init__(self, limit: int = _REF_CACHE_MAX) -> None:
        self.limit = limit
        self._refs: dict[str, ContainerRef] = {}

    def __call__(self, path: str) -> ContainerRef:
        ref = self._refs.get(path)
        if ref is None:
            if len(self._refs) >= self.limit:
                self._refs.clear()
            ref = self._refs[path] = ref_from_path(path)
        return ref


def _unit_of(ref: ContainerRef, units: Sequence[str]) -> str:
    """The innermost unit on the path that a ``units`` pattern names, or ``""``."""
    for unit in reversed(unit_names(ref)):
        if any(fnmatchcase(unit, pattern) for pattern in units):
            return unit
    return ""


def _pod_selected(meta: PodMeta, selectors: CgroupSelectors) -> bool:
    if selectors.namespaces and meta.namespace not in selectors.namespaces:
        return False
    return all(meta.labels.get(key) == value for key, value in selectors.pod_labels)


def _group(
    ref: ContainerRef, selectors: CgroupSelectors, pods: Mapping[str, PodMeta] | None
) -> tuple[_Group | None, bool]:
    """Which workspace a process of this cgroup is in (``None``: none), and whether it is a
    pod the pod list (``pods``; ``None`` when there is no list) does not name."""
    if ref.container_id:
        key = (ref.pod_uid, ref.container_id, "")
    elif selectors.units and (unit := _unit_of(ref, selectors.units)):
        key = ("", "", unit)
    else:
        return None, False  # not in a container (a pod's cgroup outside them is the runtime's)
    if selectors.cgroup_patterns and not any(
        cgroup_matches(ref, p) for p in selectors.cgroup_patterns
    ):
        return None, False
    if not ref.pod_uid or pods is None:
        return _Group(key, ref), False
    meta = pods.get(ref.pod_uid)
    if meta is None:
        return _Group(key, ref), True  # attributed by its UID alone
    if selectors.need_pods and not _pod_selected(meta, selectors):
        return None, False
    return _Group(key, ref), False


def cgroup_workspaces(
    procs: Iterable[RawProcess],
    taken: Container[int],
    selectors: CgroupSelectors,
    *,
    pods: Mapping[str, PodMeta] | None = None,
    refs: RefCache | None = None,
    joined: Mapping[str, Workspace] | None = None,
) -> CgroupResult:
    """The cgroup provider: the workspace of each process not ``taken`` (by the providers
    before it) that its cgroup names.

    ``joined`` maps a pod UID or container id to a workspace another provider found there
    (a process there joins it). Everything in a cgroup workspace is a ``user_workload``: no
    process of it is exempt by name (D6's reasoning). Its ``pid`` is the earliest-started
    process (starttime, then pid) of its container, or of its unit. Each distinct path is
    decided once a round (a node has one per container, processes many).
    """
    refs = refs if refs is not None else RefCache()
    joined = joined or {}
    decided: dict[str, _Group | Workspace | None] = {}
    members: dict[tuple[str, str, str], list[RawProcess]] = {}
    firsts: dict[tuple[str, str, str], ContainerRef] = {}
    inside: dict[int, tuple[Kind, Workspace]] = {}
    unresolved: set[str] = set()
    for proc in procs:
        path = proc.cgroup
        if not path or proc.pid in taken:
            continue
        if path in decided:
            decision = decided[path]
        else:
            decision = decided[path] = _decide(refs(path), selectors, pods, joined, unresolved)
        if decision is None:
            continue
        if isinstance(decision, Workspace):
            inside[proc.pid] = (Kind.USER_WORKLOAD, decision)
            continue
        group = members.get(decision.key)
        if group is None:
            group = members[decision.key] = []
            firsts[decision.key] = decision.ref
        group.append(proc)
    workspaces: set[str] = set()
    for key, group_procs in members.items():
        pod_uid, container_id, unit = key
        meta = pods.get(pod_uid) if pods is not None and pod_uid else None
        first = min(group_procs, key=lambda p: (p.starttime, p.pid))
        ws = Workspace(
            owner_id="",
            workspace_id=pod_uid or container_id or unit,
            instance_id="",
            git_url="",
            pid=first.pid,
            provider="cgroup",
            container_id=container_id,
            pod_uid=pod_uid,
            pod_namespace=meta.namespace if meta else "",
            pod_name=meta.name if meta else "",
        )
        workspaces.add(pod_uid if firsts[key].pod_uid else "/".join(key))
        entry = (Kind.USER_WORKLOAD, ws)
        for proc in group_procs:
            inside[proc.pid] = entry
    return CgroupResult(inside, len(workspaces), len(unresolved))


def _decide(
    ref: ContainerRef,
    selectors: CgroupSelectors,
    pods: Mapping[str, PodMeta] | None,
    joined: Mapping[str, Workspace],
    unresolved: set[str],
) -> _Group | Workspace | None:
    """What a cgroup path means this round: another provider's workspace to join, a group of
    this provider's, or nothing."""
    other = (ref.pod_uid and joined.get(ref.pod_uid)) or (
        ref.container_id and joined.get(ref.container_id)
    )
    if other:
        return other
    group, missing = _group(ref, selectors, pods)
    if group is not None and missing:
        unresolved.add(ref.pod_uid)
    return group


def _joinable(
    procs: Iterable[RawProcess], inside: Mapping[int, tuple[Kind, Workspace]], refs: RefCache
) -> dict[str, Workspace]:
    """Pod UID and container id → the Gitpod workspace whose processes are there."""
    joined: dict[str, Workspace] = {}
    for proc in procs:
        entry = inside.get(proc.pid)
        if entry is None or not proc.cgroup:
            continue
        ref = refs(proc.cgroup)
        for key in (ref.pod_uid, ref.container_id):
            if key:
                joined.setdefault(key, entry[1])
    return joined


class Providers:
    """The active providers in order, with what they need; ``find`` classifies one round."""

    def __init__(
        self,
        names: Sequence[str],
        selectors: CgroupSelectors,
        meter: Meter,
        *,
        pods: PodSource | None = None,
    ) -> None:
        unknown = [n for n in names if n not in PROVIDERS]
        if unknown or not names:
            raise ValueError(f"workspace providers are {', '.join(PROVIDERS)}; got {names!r}")
        self.names = tuple(names)
        self.selectors = selectors
        self.meter = meter
        self.pods = pods
        self.refs = RefCache()

    def find(self, index: dict[int, Node], procs: Sequence[RawProcess]) -> Classification:
        inside: dict[int, tuple[Kind, Workspace]] = {}
        total = 0
        for name in self.names:
            if name == "gitpod":
                found = classify(index)
                inside.update(found.inside)
                count = found.workspaces
            else:
                count = self._cgroup(procs, inside)
            total += count
            self.meter.set(WORKSPACES_BY_PROVIDER, count, provider=name)
        return Classification(inside, total)

    def _cgroup(
        self, procs: Sequence[RawProcess], inside: dict[int, tuple[Kind, Workspace]]
    ) -> int:
        pods = None
        if self.pods is not None:
            wanted = {
                ref.pod_uid for p in procs if p.cgroup and (ref := self.refs(p.cgroup)).pod_uid
            }
            pods = self.pods.pods(wanted)
        joined = _joinable(procs, inside, self.refs) if inside else {}
        result = cgroup_workspaces(
            procs, inside, self.selectors, pods=pods, refs=self.refs, joined=joined
        )
        inside.update(result.inside)
        self.meter.set(PODS_UNRESOLVED, result.unresolved)
        return result.workspaces
