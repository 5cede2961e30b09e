"""Workspace providers (stages/providers.py) on records built from the real-world cgroup fixtures.

The records are what scan hands on: RawProcess with the cgroup path that ``parse_cgroup`` chose
from each fixture's text. Parents are deliberately wrong for a tree rule (the container runtime,
init), because the cgroup provider must not care.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stages.base.catalog import PODS_UNRESOLVED, WORKSPACE_COUNT, WORKSPACES_BY_PROVIDER
from stages.base.meter import Tally
from stages.base.render import process_dict
from stages.base.schema import Kind, RawProcess, Round, Workloads, Workspace
from stages.cgroup import parse_cgroup
from stages.classify import build_index, classify, classify_round
from stages.podlist import PodMeta
from stages.providers import CgroupSelectors, Providers, RefCache, cgroup_workspaces

FIXTURES = Path(__file__).parent / "data" / "cgroup"
RING1 = ["/proc/self/exe", "ring1"]
GITPOD_ENV = {"GITPOD_WORKSPACE_ID": "ws-1", "GITPOD_OWNER_ID": "o", "GITPOD_INSTANCE_ID": "i"}
POD = "55c6c714-b240-4dec-9a45-57b61696ab6e"  # containerd-systemd-v2
CID = "2032491dcae31e6746f47daa0ac74564f2843a1bd847c5e6c4eb501ca132ac36"
RUNTIME_PID = 50  # containerd-shim: the parent of whatever runc exec starts


def path_of(fixture: str) -> str:
    return parse_cgroup((FIXTURES / f"{fixture}.txt").read_bytes()).cgroup_path


def raw(pid: int, ppid: int, cgroup: str = "", argv: list[str] | None = None) -> RawProcess:
    env = GITPOD_ENV if argv == RING1 else None
    return RawProcess(pid, ppid, 1000 + pid, "p", argv or [f"p{pid}"], 1, pid, env, cgroup)


def run(
    procs: list[RawProcess],
    names: tuple[str, ...] = ("gitpod", "cgroup"),
    selectors: CgroupSelectors | None = None,
    pods: dict[str, PodMeta] | None = None,
) -> tuple[Workloads, Tally]:
    tally = Tally()
    source = None if pods is None else _Fixed(pods)
    providers = Providers(names, selectors or CgroupSelectors(), tally, pods=source)
    rnd = Round(1, "/proc", sorted(procs, key=lambda p: p.pid))
    return classify_round(rnd, tally, providers), tally


class _Fixed:
    """A pod directory that already fetched: the mapping it returns."""

    def __init__(self, pods: dict[str, PodMeta]) -> None:
        self._pods = pods

    def pods(self, wanted: set[str] | None = None) -> Mapping[str, PodMeta]:
        return self._pods


def workspaces(workloads: Workloads) -> dict[int, Workspace]:
    return {p.pid: p.workspace for p in workloads.procs if p.workspace is not None}


def test_a_container_process_is_in_its_pod_wherever_its_parent_is() -> None:
    path = path_of("containerd-systemd-v2")
    procs = [raw(1, 0), raw(RUNTIME_PID, 1), raw(60, RUNTIME_PID, path), raw(61, 1, path)]
    out, tally = run(procs)
    found = workspaces(out)
    assert sorted(found) == [60, 61]  # 61 double-forked out: its parent is init
    ws = found[60]
    assert ws == found[61]
    assert (ws.provider, ws.pod_uid, ws.container_id, ws.workspace_id) == ("cgroup", POD, CID, POD)
    assert ws.pid == 60  # the earliest-started process of the container
    assert {p.kind for p in out.procs} == {Kind.USER_WORKLOAD}
    assert tally.get(WORKSPACE_COUNT) == 1
    assert tally.get(WORKSPACES_BY_PROVIDER, provider="cgroup") == 1
    assert tally.get(WORKSPACES_BY_PROVIDER, provider="gitpod") == 0


def test_gitpod_alone_ignores_cgroups() -> None:
    path = path_of("containerd-systemd-v2")
    out, _ = run([raw(1, 0), raw(60, 1, path)], names=("gitpod",))
    assert out.procs == []


@pytest.mark.parametrize(
    "fixture",
    sorted(p.stem for p in FIXTURES.glob("*.txt")),
)
def test_every_fixture_attributed_exactly_when_it_is_a_container(fixture: str) -> None:
    ref = parse_cgroup((FIXTURES / f"{fixture}.txt").read_bytes())
    out, _ = run([raw(1, 0), raw(70, 1, ref.cgroup_path)])
    found = workspaces(out)
    if ref.container_id:
        ws = found[70]
        assert (ws.container_id, ws.pod_uid) == (ref.container_id, ref.pod_uid)
    else:  # a host service, a session, a runtime's monitor (conmon): not a workspace
        assert found == {}


def test_units_make_workspaces_outside_containers_and_patterns_narrow() -> None:
    session, docker = path_of("user-session-systemd-v2"), path_of("docker-systemd-v2")
    procs = [raw(1, 0), raw(80, 1, session), raw(81, 1, docker), raw(82, 1, "/system.slice/x")]
    out, _ = run(procs, selectors=CgroupSelectors(units=("session-*.scope",)))
    found = workspaces(out)
    assert sorted(found) == [80, 81]
    assert (found[80].workspace_id, found[80].container_id) == ("session-3.scope", "")
    out, _ = run(
        procs,
        selectors=CgroupSelectors(units=("session-*.scope",), cgroup_patterns=("/user.slice/*",)),
    )
    assert sorted(workspaces(out)) == [80]


def test_namespaces_and_labels_select_pods_and_an_unlisted_pod_keeps_its_uid() -> None:
    a, b = path_of("containerd-systemd-v2"), path_of("crio-systemd-v2")
    b_ref = parse_cgroup((FIXTURES / "crio-systemd-v2.txt").read_bytes())
    procs = [raw(1, 0), raw(90, 1, a), raw(91, 1, b)]
    pods = {
        POD: PodMeta("jupyter", "jupyter-alice", {"component": "singleuser-server"}),
        b_ref.pod_uid: PodMeta("kube-system", "kube-proxy-x", {}),
    }
    out, tally = run(procs, selectors=CgroupSelectors(namespaces=("jupyter",)), pods=pods)
    found = workspaces(out)
    assert sorted(found) == [90]
    assert (found[90].pod_namespace, found[90].pod_name) == ("jupyter", "jupyter-alice")
    wanted = CgroupSelectors(pod_labels=(("component", "singleuser-server"),))
    out, _ = run(procs, selectors=wanted, pods=pods)
    assert sorted(workspaces(out)) == [90]
    out, _ = run(procs, selectors=CgroupSelectors(pod_labels=(("component", "other"),)), pods=pods)
    assert workspaces(out) == {}
    # The list is down (empty): both pods are judged, by UID alone, and that is counted.
    out, tally = run(procs, selectors=CgroupSelectors(namespaces=("jupyter",)), pods={})
    found = workspaces(out)
    assert sorted(found) == [90, 91]
    assert (found[91].pod_uid, found[91].pod_namespace) == (b_ref.pod_uid, "")
    assert tally.get(PODS_UNRESOLVED) == 2


def test_two_containers_of_one_pod_are_one_workspace() -> None:
    base = path_of("containerd-systemd-v2").rsplit("/", 1)[0]
    other = "f" * 64
    procs = [raw(1, 0), raw(60, 1, f"{base}/cri-containerd-{CID}.scope")]
    procs.append(raw(62, 1, f"{base}/cri-containerd-{other}.scope"))
    out, tally = run(procs)
    found = workspaces(out)
    assert {found[60].container_id, found[62].container_id} == {CID, other}
    assert found[60].pod_uid == found[62].pod_uid == POD
    assert tally.get(WORKSPACE_COUNT) == 1


def test_gitpod_comes_first_and_exec_into_its_pod_joins_it() -> None:
    """ring1's tree is a Gitpod workspace; ``kubectl exec`` into its pod starts a child of the
    runtime in the same container: it is in that Gitpod workspace, not a new one."""
    path = path_of("containerd-systemd-v2")
    procs = [
        raw(1, 0),
        raw(10, 1, path, RING1),
        raw(11, 10, path, ["supervisor", "init"]),
        raw(12, 11, path, ["bash"]),
        raw(40, RUNTIME_PID, path, ["miner"]),  # the exec'd process: outside the tree
    ]
    out, tally = run(procs)
    found = workspaces(out)
    assert sorted(found) == [12, 40]
    assert found[40] == found[12]
    assert (found[40].provider, found[40].workspace_id, found[40].pid) == ("gitpod", "ws-1", 11)
    assert tally.get(WORKSPACE_COUNT) == 1
    rendered = process_dict(out.procs[0])["workspace"]
    assert set(rendered) == {"owner_id", "workspace_id", "instance_id", "git_url", "pid"}


def test_gitpod_result_unchanged_by_providers() -> None:
    procs = [raw(1, 0), raw(10, 1, "", RING1), raw(11, 10, "", ["supervisor", "init"])]
    procs += [raw(12, 11), raw(13, 12)]
    index = build_index(procs)
    alone = classify(index)
    out, _ = run(procs)
    assert {p.pid: (p.kind, p.workspace) for p in out.procs} == {
        pid: entry for pid, entry in alone.inside.items() if entry[0] is Kind.USER_WORKLOAD
    }


def test_cgroup_workspace_renders_its_provider_fields() -> None:
    out, _ = run([raw(1, 0), raw(60, 1, path_of("containerd-systemd-v2"))])
    rendered = process_dict(out.procs[0])["workspace"]
    assert rendered["provider"] == "cgroup"
    assert (rendered["pod_uid"], rendered["container_id"]) == (POD, CID)
    assert "pod_name" not in rendered  # unknown without a pod list: left out, like defaults


def test_unknown_provider_refused() -> None:
    with pytest.raises(ValueError, match="providers are gitpod, cgroup"):
        Providers(["k8s"], CgroupSelectors(), Tally())


def test_ref_cache_is_bounded() -> None:
    refs = RefCache(limit=4)
    for n in range(10):
        refs(f"/a/{n}")
    assert len(refs._refs) <= 4


_PATH_PARTS = st.sampled_from(
    [
        "kubepods.slice",
        "kubepods",
        "besteffort",
        "..",
        "docker",
        "user@1000.service",
        "x.scope",
        f"pod{POD}",
        f"cri-containerd-{CID}.scope",
        CID,
        "crio-conmon-" + CID + ".scope",
        "",
    ]
)


@given(st.lists(st.lists(_PATH_PARTS, max_size=8).map(lambda p: "/" + "/".join(p)), max_size=20))
def test_any_cgroup_paths_never_raise_and_only_containers_or_units_are_attributed(
    paths: list[str],
) -> None:
    procs = [raw(100 + n, 1, path) for n, path in enumerate(paths)]
    result = cgroup_workspaces(procs, set(), CgroupSelectors(units=("x.scope",)))
    for pid, (kind, ws) in result.inside.items():
        assert kind is Kind.USER_WORKLOAD and ws.provider == "cgroup"
        assert ws.container_id or ws.workspace_id == "x.scope", (pid, ws)
    assert result.workspaces <= len(paths)
