"""Tree building and classification on records (no files): D3, D4, D6 and the awkward shapes."""

from __future__ import annotations

from stages.base.schema import Kind, RawProcess, Workspace
from stages.classify import SUPERVISOR_ARGV, build_index, classify, sandbox_workspace

RING1 = ["/proc/self/exe", "ring1"]
ENV = {"GITPOD_WORKSPACE_ID": "ws", "GITPOD_INSTANCE_ID": "inst"}


def raw(
    pid: int, ppid: int, argv: list[str] | None = None, start: int = 0, **kw: object
) -> RawProcess:
    return RawProcess(pid, ppid, start or 1000 + pid, "c", argv or [f"p{pid}"], **kw)  # type: ignore[arg-type]


def ws_tree(extra: list[RawProcess]) -> list[RawProcess]:
    return [raw(1, 0), raw(10, 1, RING1, gitpod_env=ENV), raw(11, 10, SUPERVISOR_ARGV), *extra]


def kinds(procs: list[RawProcess]) -> dict[int, Kind]:
    c = classify(build_index(procs))
    return {pid: c.kind(pid) for pid in sorted({p.pid for p in procs})}


def test_workspace_found() -> None:
    c = classify(build_index(ws_tree([raw(12, 11, ["bash"]), raw(13, 12, ["xmrig"])])))
    assert c.workspaces == 1
    assert {pid: k for pid, (k, _) in c.inside.items()} == {
        10: Kind.SANDBOX,
        11: Kind.SUPERVISOR,
        12: Kind.USER_WORKLOAD,
        13: Kind.USER_WORKLOAD,
    }
    assert c.inside[13][1] == Workspace("", "ws", "inst", "", pid=11)


def test_hundred_thousand_deep_chain() -> None:
    """D3: a chain of 100,000 processes under a workspace is walked without recursion."""
    depth = 100_000
    chain = [raw(100 + i, 99 + i if i else 11) for i in range(depth)]
    c = classify(build_index(ws_tree(chain)))
    assert sum(k is Kind.USER_WORKLOAD for k, _ in c.inside.values()) == depth


def test_self_parent() -> None:
    procs = ws_tree([raw(12, 12, ["me"]), raw(13, 11, ["ok"])])
    k = kinds(procs)
    assert k[12] is Kind.UNKNOWN  # unreachable from pid 1: it is its own parent
    assert k[13] is Kind.USER_WORKLOAD


def test_pid_one_its_own_parent() -> None:
    procs = [
        raw(1, 1),
        raw(10, 1, RING1, gitpod_env=ENV),
        raw(11, 10, SUPERVISOR_ARGV),
        raw(12, 11),
    ]
    assert kinds(procs)[12] is Kind.USER_WORKLOAD


def test_cycle() -> None:
    procs = ws_tree([raw(20, 21), raw(21, 20), raw(22, 11)])
    k = kinds(procs)
    assert (k[20], k[21], k[22]) == (Kind.UNKNOWN, Kind.UNKNOWN, Kind.USER_WORKLOAD)


def test_cycle_through_the_workspace() -> None:
    """pid 1 names a process inside a workspace as its parent: the walk must not loop."""
    procs = [
        raw(1, 12),
        raw(10, 1, RING1, gitpod_env=ENV),
        raw(11, 10, SUPERVISOR_ARGV),
        raw(12, 11),
        raw(13, 12),
    ]
    index = build_index(procs)
    assert index[1] in index[12].children
    k = kinds(procs)
    assert (k[1], k[12], k[13]) == (Kind.UNKNOWN, Kind.USER_WORKLOAD, Kind.USER_WORKLOAD)


def test_parent_that_never_appears() -> None:
    index = build_index(ws_tree([raw(30, 29, ["orphan"])]))
    assert index[29].proc is None  # a placeholder
    assert [c.pid for c in index[29].children] == [30]
    assert classify(index).kind(30) is Kind.UNKNOWN


def test_pid_reuse_child_lower_than_parent() -> None:
    """The child (pid 5) sorts before its parent (pid 50): the placeholder is filled later."""
    procs = [
        raw(1, 0),
        raw(5, 50, ["child"]),
        raw(10, 1, RING1, gitpod_env=ENV),
        raw(11, 10, SUPERVISOR_ARGV),
        raw(50, 11, ["parent"]),
    ]
    index = build_index(procs)
    assert index[50].proc is not None
    assert kinds(procs)[5] is Kind.USER_WORKLOAD


def test_supervisor_is_second_child() -> None:
    """D4: the reference only looks at the first child and misses this workspace."""
    procs = [
        raw(1, 0),
        raw(10, 1, RING1, gitpod_env=ENV),
        raw(11, 10, ["sidecar"]),
        raw(12, 10, SUPERVISOR_ARGV),
        raw(13, 12, ["bash"]),
    ]
    c = classify(build_index(procs))
    assert c.workspaces == 1
    assert c.inside[13] == (Kind.USER_WORKLOAD, Workspace("", "ws", "inst", "", pid=12))
    assert c.kind(11) is Kind.USER_WORKLOAD  # the ring1's other child is inside it too


def test_earliest_started_supervisor_wins() -> None:
    """D4: of two supervisor children, the earliest-started; pids wrapped so it is the higher."""
    procs = [
        raw(1, 0),
        raw(10, 1, RING1, gitpod_env=ENV),
        raw(5, 10, SUPERVISOR_ARGV, start=900),
        raw(40, 10, SUPERVISOR_ARGV, start=300),
    ]
    index = build_index(procs)
    ws = sandbox_workspace(index[10])
    assert ws is not None and ws.pid == 40
    c = classify(index)
    assert (c.kind(40), c.kind(5)) == (Kind.SUPERVISOR, Kind.USER_WORKLOAD)
    tie = [
        raw(1, 0),
        raw(10, 1, RING1, gitpod_env=ENV),
        raw(7, 10, SUPERVISOR_ARGV, start=300),
        raw(6, 10, SUPERVISOR_ARGV, start=300),
    ]
    assert classify(build_index(tie)).kind(6) is Kind.SUPERVISOR


def test_nested_ring1_and_second_supervisor_are_user_workloads() -> None:
    """D6: inside a workspace only its own supervisor is exempt."""
    procs = ws_tree(
        [
            raw(12, 11, RING1, gitpod_env={"GITPOD_WORKSPACE_ID": "nested"}),
            raw(13, 12, SUPERVISOR_ARGV),
            raw(14, 13, ["xmrig"]),
            raw(15, 11, SUPERVISOR_ARGV),
        ]
    )
    c = classify(build_index(procs))
    assert c.workspaces == 1
    for pid in (12, 13, 14, 15):
        assert c.inside[pid] == (Kind.USER_WORKLOAD, Workspace("", "ws", "inst", "", pid=11))


def test_ring1_without_readable_environ_is_no_workspace() -> None:
    procs = [raw(1, 0), raw(10, 1, RING1), raw(11, 10, SUPERVISOR_ARGV), raw(12, 11)]
    assert classify(build_index(procs)).workspaces == 0


def test_ring1_argv_rules() -> None:
    more = [
        raw(1, 0),
        raw(10, 1, [*RING1, "--extra"], gitpod_env=ENV),
        raw(11, 10, SUPERVISOR_ARGV),
    ]
    assert classify(build_index(more)).workspaces == 1
    for argv in (["/proc/self/exe"], ["ring1"], ["/proc/self/exe", "ring2"]):
        procs = [raw(1, 0), raw(10, 1, argv, gitpod_env=ENV), raw(11, 10, SUPERVISOR_ARGV)]
        assert classify(build_index(procs)).workspaces == 0
    for sup in (["supervisor"], ["supervisor", "init", "x"], ["supervisor", "run"]):
        procs = [raw(1, 0), raw(10, 1, RING1, gitpod_env=ENV), raw(11, 10, sup)]
        assert classify(build_index(procs)).workspaces == 0


def test_no_pid_one_means_nothing() -> None:
    procs = [raw(10, 5, RING1, gitpod_env=ENV), raw(11, 10, SUPERVISOR_ARGV), raw(12, 11)]
    assert classify(build_index(procs)).inside == {}
