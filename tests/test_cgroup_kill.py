"""kill-workspace for cgroup workspaces (stages/cgroupkill.py, stages/verify_cgroup.py) on the
real cgroupfs: every process is one this test started and moved into a cgroup it made."""

from __future__ import annotations

import functools
import io
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from simulation.cgroups import CgroupTree, Unavailable, procs_of
from simulation.harness import wait_until
from stages.base.catalog import ENFORCE_PENALTIES, ENFORCE_PENALTY_FAILURES
from stages.base.meter import Tally
from stages.base.schema import Finding, Kind, Level, Process, Workspace
from stages.cgroupkill import kill_container, mount_map
from stages.enforce import Enforcer
from stages.penalty import PenaltyFailed
from stages.pidcheck import current_starttime
from stages.procfs import is_running
from stages.verify_cgroup import in_workspace

pytestmark = pytest.mark.realproc


@pytest.fixture
def tree(request: pytest.FixtureRequest) -> Iterator[CgroupTree]:
    try:
        with CgroupTree(request.param) as made:
            yield made
    except Unavailable as why:
        pytest.skip(str(why))


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()


def sleeper(started: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["sleep", "60"], stdin=subprocess.DEVNULL)
    started.append(proc)
    return proc


def starttime(pid: int) -> int:
    now = current_starttime(f"/proc/{pid}")
    assert isinstance(now, int)
    return now


def workspace(cid: str, uid: str = "") -> Workspace:
    return Workspace("", uid or cid, "", "", 0, "cgroup", cid, uid)


def gone(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is not None


def pod_with_two_containers(
    tree: CgroupTree, started: list[subprocess.Popen[bytes]]
) -> tuple[str, str, list[subprocess.Popen[bytes]], subprocess.Popen[bytes]]:
    """(uid, container a's id, a's processes (one in a child cgroup), b's process)."""
    pod, uid = tree.pod()
    a, cid = tree.container(pod)
    b, _ = tree.container(pod)
    child = a / "container"
    child.mkdir()
    in_a = [sleeper(started), sleeper(started)]
    tree.move(in_a[0].pid, a)
    tree.move(in_a[1].pid, child)
    in_b = sleeper(started)
    tree.move(in_b.pid, b)
    return uid, cid, in_a, in_b


@pytest.mark.parametrize("tree", [""], indirect=True)
@pytest.mark.parametrize("use_cgroup_kill", [True, False], ids=["cgroup.kill", "each-pid"])
def test_kills_the_container_and_spares_its_pods_other_container(
    tree: CgroupTree, spawned: list[subprocess.Popen[bytes]], use_cgroup_kill: bool
) -> None:
    uid, cid, in_a, in_b = pod_with_two_containers(tree, spawned)
    target = in_a[0].pid
    killed = kill_container(
        "/proc",
        mount_map("/proc"),
        target,
        starttime(target),
        workspace(cid, uid),
        use_cgroup_kill=use_cgroup_kill,
    )
    assert killed == (-1 if use_cgroup_kill else 2)
    for proc in in_a:
        wait_until("the container's processes to die", functools.partial(gone, proc), timeout=10)
    assert in_b.poll() is None


@pytest.mark.parametrize("tree", ["name=systemd"], indirect=True)
def test_v1_hierarchy_kills_each_pid(
    tree: CgroupTree, spawned: list[subprocess.Popen[bytes]]
) -> None:
    cid = "ab" * 32
    scope = tree.top / "docker" / cid  # docker's cgroupfs layout
    scope.mkdir(parents=True)
    procs = [sleeper(spawned), sleeper(spawned)]
    for proc in procs:
        tree.move(proc.pid, scope)
    if "0::/\n" not in Path(f"/proc/{procs[0].pid}/cgroup").read_text():
        pytest.skip("this process's v2 cgroup is not the root: it would decide, not v1")
    killed = kill_container(
        "/proc", mount_map("/proc"), procs[0].pid, starttime(procs[0].pid), workspace(cid)
    )
    assert killed == 2
    for proc in procs:
        wait_until("both to die", functools.partial(gone, proc), timeout=10)


@pytest.mark.parametrize("tree", [""], indirect=True)
def test_refuses_a_process_not_in_the_workspace_or_not_the_finding_s(
    tree: CgroupTree, spawned: list[subprocess.Popen[bytes]]
) -> None:
    uid, cid, in_a, in_b = pod_with_two_containers(tree, spawned)
    target = in_a[0].pid
    mounts = mount_map("/proc")
    cases = [
        (workspace("cd" * 32, uid), starttime(target), "left_workspace"),  # another container
        (workspace(cid, uid), starttime(target) + 1, "reused"),  # another process on the pid
        (Workspace("", "ws", "", "", 1), starttime(target), "no_container"),  # a Gitpod one
    ]
    for ws, start, reason in cases:
        assert in_workspace("/proc", target, start, ws) == reason
        with pytest.raises(PenaltyFailed) as failed:
            kill_container("/proc", mounts, target, start, ws)
        assert failed.value.reason == reason
    # It left the container (moved to its pod's other one) since the finding was made.
    tree.move(target, tree.top)
    with pytest.raises(PenaltyFailed) as failed:
        kill_container("/proc", mounts, target, starttime(target), workspace(cid, uid))
    assert failed.value.reason == "left_workspace"
    assert all(proc.poll() is None for proc in [*in_a, in_b])


@pytest.mark.parametrize("tree", [""], indirect=True)
def test_enforce_kill_workspace_on_a_cgroup_finding(
    tree: CgroupTree, spawned: list[subprocess.Popen[bytes]], tally: Tally
) -> None:
    uid, cid, in_a, in_b = pod_with_two_containers(tree, spawned)
    target = in_a[0]
    proc = Process(
        target.pid,
        1,
        starttime(target.pid),
        0,
        f"/proc/{target.pid}/exe",
        ["sleep", "60"],
        Kind.USER_WORKLOAD,
        workspace(cid, uid),
    )
    finding = Finding(proc, "test", Level.VERY, "signature", datetime.now(UTC))
    enforcer = Enforcer(tally, "/proc", penalties={"very": "kill-workspace"}, stdout=io.BytesIO())
    enforcer.handle(finding)
    assert tally.get(ENFORCE_PENALTIES, action="kill-workspace", result="ok") == 1
    for p in in_a:
        wait_until("the container's processes to die", functools.partial(gone, p), timeout=10)
    assert in_b.poll() is None and is_running(in_b.pid)
    enforcer.handle(finding)  # again: the process is gone now
    failures = tally.get(ENFORCE_PENALTY_FAILURES, action="kill-workspace", reason="vanished")
    assert failures == 1
    assert procs_of(tree.top) == []


HYBRID_MOUNTINFO = (
    b"30 23 0:26 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755\n"
    b"31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw\n"
    b"32 30 0:28 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,xattr,name=systemd\n"
    b"35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:16 - cgroup cgroup rw,cpu,cpuacct\n"
    b"40 23 0:40 / /var/lib/docker rw - ext4 /dev/sda1 rw\n"
)


def test_mount_map_moves_the_host_s_mounts_to_cgroup_root(tmp_path: Path) -> None:
    """The DaemonSet's view: the host's init's mountinfo under proc_root, the host's tree at
    /host/sys/fs/cgroup; and a host whose mountinfo cannot be read is taken for v2."""
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "mountinfo").write_bytes(HYBRID_MOUNTINFO)
    assert mount_map(str(tmp_path), "/host/sys/fs/cgroup") == {
        "": "/host/sys/fs/cgroup/unified",
        "name=systemd": "/host/sys/fs/cgroup/systemd",
        "cpu": "/host/sys/fs/cgroup/cpu,cpuacct",
        "cpuacct": "/host/sys/fs/cgroup/cpu,cpuacct",
    }
    assert mount_map(str(tmp_path / "nothing"), "/host/cg") == {"": "/host/cg"}
