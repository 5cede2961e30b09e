"""When scan reads /proc/<pid>/cgroup (the cgroup provider on): on a process's full reads only
(new, exec'd, the periodic re-read), never on the unchanged-stat fast path; bounded."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from simulation.fakeproc import FakeProcfs
from stages.base.catalog import SCAN_TRUNCATED
from stages.base.meter import Tally
from stages.cgroup import CGROUP_MAX_BYTES
from stages.cgroupread import PATH_MAX_CHARS, bounded_path
from stages.shardreader import ShardReader

FIXTURES = Path(__file__).parent / "data" / "cgroup"
POD_PATH = (
    "/kubepods.slice/kubepods-burstable.slice/"
    "kubepods-burstable-pod55c6c714_b240_4dec_9a45_57b61696ab6e.slice/"
    "cri-containerd-2032491dcae31e6746f47daa0ac74564f2843a1bd847c5e6c4eb501ca132ac36.scope"
)


def write_cgroup(fs: FakeProcfs, pid: int, text: bytes) -> None:
    (fs.root / str(pid) / "cgroup").write_bytes(text)


def cgroups(reader: ShardReader, round_id: int) -> dict[int, str]:
    return {p.pid: p.cgroup for p in reader.read(round_id).procs}


def test_read_on_first_sight_and_on_exec_not_in_steady_rounds(fakeproc: FakeProcfs) -> None:
    fakeproc.add(20, 1, ["job"], exe="job")
    write_cgroup(fakeproc, 20, b"0::/system.slice/runc.scope\n")
    write_cgroup(fakeproc, 1, b"0::/init.scope\n")
    reader = ShardReader(str(fakeproc.root), Tally(), read_cgroup=True, recheck_every=1000)
    assert cgroups(reader, 1) == {1: "/init.scope", 20: "/system.slice/runc.scope"}
    # Moved without an exec: the steady rounds do not look (the stat line is unchanged).
    write_cgroup(fakeproc, 20, (FIXTURES / "containerd-systemd-v2.txt").read_bytes())
    assert cgroups(reader, 2)[20] == "/system.slice/runc.scope"
    # It execs (runc exec joins the cgroup first, then execs): read again.
    fakeproc.add(20, 1, ["miner"], exe="miner")
    assert cgroups(reader, 3)[20] == POD_PATH
    reader.close()


def test_the_periodic_full_read_leaves_it_and_a_new_process_on_the_pid_reads_it(
    fakeproc: FakeProcfs,
) -> None:
    fakeproc.add(20, 1, ["job"], exe="job")
    write_cgroup(fakeproc, 20, b"0::/user.slice/a.scope\n")
    reader = ShardReader(str(fakeproc.root), Tally(), read_cgroup=True, recheck_every=1)
    assert cgroups(reader, 1)[20] == "/user.slice/a.scope"
    write_cgroup(fakeproc, 20, (FIXTURES / "containerd-systemd-v2.txt").read_bytes())
    assert cgroups(reader, 2)[20] == "/user.slice/a.scope"  # re-read in full, cgroup not
    fakeproc.add(20, 1, ["job"], exe="job", starttime=5000)  # the pid reused
    assert cgroups(reader, 3)[20] == POD_PATH
    reader.close()


def test_not_read_without_the_provider_and_missing_is_empty(fakeproc: FakeProcfs) -> None:
    fakeproc.add(20, 1, ["job"], exe="job")
    write_cgroup(fakeproc, 20, (FIXTURES / "containerd-systemd-v2.txt").read_bytes())
    assert cgroups(ShardReader(str(fakeproc.root), Tally()), 1) == {1: "", 20: ""}
    on = ShardReader(str(fakeproc.root), Tally(), read_cgroup=True)
    assert cgroups(on, 1)[1] == ""  # pid 1 has no cgroup file here: not read, not a skip
    on.close()


def test_a_huge_cgroup_file_is_cut_and_still_attributes(fakeproc: FakeProcfs, tally: Tally) -> None:
    """A process that may create cgroups below its own makes its path as long as it likes:
    only components after the ones that attribute it are cut."""
    fakeproc.add(20, 1, ["job"], exe="job")
    deep = POD_PATH + "/x" * (CGROUP_MAX_BYTES // 2 + 10)
    write_cgroup(fakeproc, 20, f"0::{deep}\n".encode())
    reader = ShardReader(str(fakeproc.root), tally, read_cgroup=True)
    path = cgroups(reader, 1)[20]
    assert path.startswith(POD_PATH + "/x/x") and len(path) <= PATH_MAX_CHARS
    assert tally.get(SCAN_TRUNCATED, file="cgroup") == 1
    reader.close()


@given(st.text(alphabet="/ab.", max_size=PATH_MAX_CHARS * 2))
def test_bounded_path_is_a_bounded_prefix(path: str) -> None:
    bounded, cut = bounded_path(path)
    assert path.startswith(bounded) and len(bounded) <= PATH_MAX_CHARS
    assert cut == (len(path) > PATH_MAX_CHARS)
    assert not cut or path[len(bounded)] == "/" or "/" not in path[1:PATH_MAX_CHARS]
