"""The cgroup parser on this machine's real /proc: processes moved into fresh cgroups.

Each test makes its own cgroup tree (named like a Kubernetes pod and container, under a
``procsmith-test-<random>`` parent), moves processes it spawned into it by writing their pid to
``cgroup.procs``, reads ``/proc/<pid>/cgroup`` and parses it. The tree is removed afterwards:
its processes killed first (``cgroup.kill`` on v2, else each pid in ``cgroup.procs``: only the
test's own processes can be in a cgroup it just made), then the directories, leaves first.
Skipped, with the reason, where there is no cgroupfs mount this process may write.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stages.cgroup import ContainerRef, parse_cgroup
from stages.cgroupdir import cgroup_mounts, container_dir

pytestmark = pytest.mark.realproc
WAIT_SECONDS = 10.0  # how long a kill or an exit may take before the test gives up


def _mount(key: str) -> Path:
    if os.geteuid() != 0:
        pytest.skip("moving processes between cgroups needs root")
    mounts = cgroup_mounts(Path("/proc/self/mountinfo").read_bytes())
    if key not in mounts:
        pytest.skip(f"no cgroup hierarchy {key or 'v2'!r} is mounted here (have {sorted(mounts)})")
    return Path(mounts[key])


def _procs(cgroup: Path) -> list[int]:
    return [int(line) for line in (cgroup / "cgroup.procs").read_text().split()]


def _empty(cgroup: Path) -> bool:
    return not _procs(cgroup)


def _wait_for(condition: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {condition}")
        time.sleep(0.01)


def _remove(top: Path) -> None:
    leaves_first = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
    for cgroup in [*leaves_first, top]:
        kill = cgroup / "cgroup.kill"
        if kill.exists():
            kill.write_text("1")
        else:
            for pid in _procs(cgroup):  # v1: only this test's processes are in its cgroups
                os.kill(pid, signal.SIGKILL)
        _wait_for(f"{cgroup} to empty", functools.partial(_empty, cgroup))
    for cgroup in [*leaves_first, top]:
        cgroup.rmdir()


@pytest.fixture
def cgroup_tree(request: pytest.FixtureRequest) -> Iterator[tuple[Path, Path]]:
    """(mount, top): a fresh ``procsmith-test-<random>`` cgroup under the hierarchy's mount."""
    mount = _mount(request.param)
    top = mount / f"procsmith-test-{secrets.token_hex(4)}"
    try:
        top.mkdir()
    except OSError as error:
        pytest.skip(f"cannot make a cgroup under {mount}: {error}")
    try:
        yield mount, top
    finally:
        _remove(top)


def _pod_scope(top: Path) -> tuple[Path, str, str]:
    uid, cid = str(uuid.uuid4()), secrets.token_hex(32)
    pod = top / f"kubepods-besteffort-pod{uid.replace('-', '_')}.slice"
    scope = pod / f"cri-containerd-{cid}.scope"
    scope.mkdir(parents=True)
    return scope, uid, cid


def _move(pid: int, cgroup: Path) -> None:
    try:
        (cgroup / "cgroup.procs").write_text(str(pid))
    except OSError as error:
        pytest.skip(f"cannot move a process into {cgroup}: {error}")


def _read(pid: int) -> ContainerRef:
    return parse_cgroup(Path(f"/proc/{pid}/cgroup").read_bytes())


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"], stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("cgroup_tree", [""], indirect=True)
def test_a_process_in_a_pod_container_cgroup_is_attributed(cgroup_tree: tuple[Path, Path]) -> None:
    mount, top = cgroup_tree
    scope, uid, cid = _pod_scope(top)
    sleeper = _sleeper()
    try:
        before = _read(sleeper.pid)
        _move(sleeper.pid, scope)
        ref = _read(sleeper.pid)
        assert not before.in_container or before.container_id != cid
        assert (ref.version, ref.runtime, ref.container_id) == (2, "containerd", cid)
        assert (ref.pod_uid, ref.qos) == (uid, "besteffort")
        assert container_dir(ref.cgroup_path, str(mount)) == str(scope)
        assert sleeper.pid in _procs(scope)
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize("cgroup_tree", [""], indirect=True)
def test_a_process_that_double_forks_out_of_its_tree_stays_attributed(
    cgroup_tree: tuple[Path, Path],
) -> None:
    """The grandchild is orphaned (reparented away from the tree) and keeps its cgroup."""
    _mount_point, top = cgroup_tree
    scope, uid, cid = _pod_scope(top)
    # The shell waits for "go" so that it is in the cgroup before it forks.
    script = "read go; (sleep 60 </dev/null >/dev/null 2>&1 & echo $!)"
    shell = subprocess.Popen(["sh", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert shell.stdin is not None and shell.stdout is not None
    _move(shell.pid, scope)
    shell.stdin.write(b"go\n")
    shell.stdin.close()
    grandchild = int(shell.stdout.readline())
    shell.wait(timeout=WAIT_SECONDS)
    stat = Path(f"/proc/{grandchild}/stat").read_text()
    ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
    assert ppid not in (shell.pid, os.getpid())  # no longer under the shell or under pytest
    ref = _read(grandchild)
    assert (ref.container_id, ref.pod_uid) == (cid, uid)
    assert grandchild in _procs(scope)  # and the cleanup's cgroup.kill reaches it


@pytest.mark.parametrize("cgroup_tree", [""], indirect=True)
def test_read_from_another_cgroup_namespace_still_names_the_pod(
    cgroup_tree: tuple[Path, Path],
) -> None:
    """What a DaemonSet in its own cgroup namespace reads: ``/../kubepods-...`` paths."""
    if shutil.which("unshare") is None:
        pytest.skip("util-linux unshare is not installed")
    _mount_point, top = cgroup_tree
    scope, uid, cid = _pod_scope(top)
    reader_cgroup = top / "reader"
    reader_cgroup.mkdir()
    target = _sleeper()
    try:
        _move(target.pid, scope)
        reader = subprocess.Popen(
            ["sh", "-c", f"read go; exec unshare --cgroup cat /proc/{target.pid}/cgroup"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        _move(reader.pid, reader_cgroup)
        out, err = reader.communicate(b"go\n", timeout=WAIT_SECONDS)
        if reader.returncode != 0:
            pytest.skip(f"unshare --cgroup failed here: {err.decode(errors='replace').strip()}")
        seen = parse_cgroup(out)
        assert seen.cgroup_path.startswith("/../"), out
        assert (seen.container_id, seen.pod_uid, seen.qos) == (cid, uid, "besteffort")
    finally:
        target.kill()
        target.wait()


@pytest.mark.parametrize("cgroup_tree", ["name=systemd"], indirect=True)
def test_v1_hierarchy_docker_cgroupfs_layout(cgroup_tree: tuple[Path, Path]) -> None:
    """On a v1 (or hybrid) host: a ``/docker/<id>`` cgroup in the named systemd hierarchy."""
    mount, top = cgroup_tree
    cid = secrets.token_hex(32)
    container = top / "docker" / cid
    container.mkdir(parents=True)
    sleeper = _sleeper()
    try:
        _move(sleeper.pid, container)
        ref = _read(sleeper.pid)
        if ref.version == 2:
            pytest.skip("this process's v2 cgroup already names a container")
        assert (ref.version, ref.controllers) == (1, "name=systemd")
        assert (ref.runtime, ref.container_id, ref.pod_uid) == ("docker", cid, "")
        assert container_dir(ref.cgroup_path, str(mount)) == str(container)
    finally:
        sleeper.kill()
        sleeper.wait()
