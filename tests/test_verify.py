"""stages/verify.py: the gitpod rule enforce asks before a penalty. Fake procfs trees for the
edge cases (the real-/proc cases are in tests/test_enforce.py); a property test that no tree
makes it raise or confirm a process outside the named workspace."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from simulation.fakeproc import FakeProcfs
from stages.base.schema import Workspace
from stages.verify import MAX_DEPTH, REASONS, gitpod_rule, rule_for


def ws(supervisor: int, workspace_id: str = "ws") -> Workspace:
    return Workspace("owner", workspace_id, "instance", "", supervisor)


def check(
    fs: FakeProcfs, pid: int, workspace: Workspace | None, starttime: int | None = None
) -> str | None:
    """The rule on ``pid`` of ``fs`` (FakeProcfs gives pid N the starttime 1000 + N)."""
    start = 1000 + pid if starttime is None else starttime
    return gitpod_rule(str(fs.root), pid, start, workspace)


def test_a_process_of_the_workspace_is_confirmed(fakeproc: FakeProcfs) -> None:
    fakeproc.workspace(10, 11, workspace_id="ws")
    fakeproc.add(20, 11, ["bash"])
    fakeproc.add(21, 20, ["./xmrig"])
    assert check(fakeproc, 21, ws(11)) is None
    assert check(fakeproc, 20, ws(11)) is None
    assert rule_for("gitpod")(str(fakeproc.root), 21, 1021, ws(11)) is None


def test_each_broken_link_has_its_reason(fakeproc: FakeProcfs) -> None:
    fakeproc.workspace(10, 11, workspace_id="ws")
    fakeproc.workspace(30, 31, workspace_id="other")
    fakeproc.add(21, 11, ["./xmrig"])
    fakeproc.add(40, 1, ["sleep"])  # outside any workspace
    fakeproc.add(50, 1, ["supervisor", "init"])  # a supervisor without a ring1 parent
    fakeproc.add(51, 50, ["x"])
    fakeproc.add(60, 1, ["sh"])  # a "supervisor" that is not one
    fakeproc.add(61, 60, ["x"])
    assert check(fakeproc, 21, None) == "no_workspace"
    assert check(fakeproc, 21, ws(11), starttime=5) == "reused"
    assert check(fakeproc, 99, ws(11)) == "vanished"
    assert check(fakeproc, 40, ws(11)) == "outside"
    assert check(fakeproc, 40, ws(1)) == "outside"  # the walk never climbs to init
    assert check(fakeproc, 21, ws(31)) == "outside"  # another workspace's supervisor
    assert check(fakeproc, 21, ws(11, "other")) == "other_workspace"
    assert check(fakeproc, 51, ws(50)) == "not_ring1"
    assert check(fakeproc, 61, ws(60)) == "not_supervisor"
    assert rule_for("nonesuch")(str(fakeproc.root), 21, 1021, ws(11)) == "unknown_provider"


def test_cycles_self_parents_and_deep_chains_end(fakeproc: FakeProcfs) -> None:
    fakeproc.add(70, 70, ["self"])
    fakeproc.add(80, 81, ["a"])
    fakeproc.add(81, 80, ["b"])
    assert check(fakeproc, 70, ws(11)) == "outside"
    assert check(fakeproc, 80, ws(11)) == "too_deep"
    fakeproc.workspace(10, 11)
    parent = 11
    for pid in range(1000, 1000 + MAX_DEPTH + 1):
        fakeproc.add(pid, parent, ["x"])
        parent = pid
    assert check(fakeproc, parent, ws(11)) == "too_deep"
    assert check(fakeproc, 1000 + MAX_DEPTH - 2, ws(11)) is None


def test_unreadable_and_malformed_files(fakeproc: FakeProcfs) -> None:
    fakeproc.workspace(10, 11)
    fakeproc.add(21, 11, ["x"])
    fakeproc.add(22, 21, ["y"], stat=b"22 (y) S garbage")
    assert check(fakeproc, 22, ws(11)) == "unreadable"
    (fakeproc.root / "10" / "environ").unlink()
    assert check(fakeproc, 21, ws(11)) == "vanished"


def test_a_long_environ_cannot_smuggle_the_workspace_id(fakeproc: FakeProcfs) -> None:
    """D5, as classify reads it: a value holding 'GITPOD_WORKSPACE_ID=' is not an entry."""
    env = b"GITPOD_WORKSPACE_ID=real\0X=" + b"a" * 600 + b"GITPOD_WORKSPACE_ID=forged\0"
    fakeproc.add(10, 1, ["/proc/self/exe", "ring1"], env=env)
    fakeproc.add(11, 10, ["supervisor", "init"])
    fakeproc.add(21, 11, ["x"])
    assert check(fakeproc, 21, ws(11, "forged")) == "other_workspace"
    assert check(fakeproc, 21, ws(11, "real")) is None


_PIDS = st.integers(min_value=2, max_value=40)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(_PIDS, st.tuples(st.integers(0, 40), st.booleans()), max_size=25), _PIDS)
@example(tree={2: (0, False), 3: (0, False), 23: (2, True)}, target=23)  # a second supervisor
def test_never_raises_and_confirms_only_descendants(
    tree: dict[int, tuple[int, bool]], target: int
) -> None:
    """Any tree of processes, some named `supervisor init`, under one real ring1 (ring1 2 →
    supervisor 3): a confirmed target descends from the supervisor the finding names, and
    that is pid 3 or another `supervisor init` child of ring1 2, inside the same workspace
    (the rule does not ask which of several classify named: see stages/verify.py)."""
    with tempfile.TemporaryDirectory() as tmp:
        fs = FakeProcfs(Path(tmp) / "proc")
        fs.add(1, 0, ["/sbin/init"])
        fs.workspace(2, 3, workspace_id="ws")
        for pid, (ppid, named_supervisor) in tree.items():
            if pid in (2, 3):
                continue
            fs.add(pid, ppid, ["supervisor", "init"] if named_supervisor else ["p"])
        for supervisor in (3, *tree):
            got = check(fs, target, ws(supervisor))
            assert got is None or got in REASONS
            if got is None:
                assert supervisor == 3 or (supervisor != 2 and tree[supervisor] == (2, True))
                parent = {**{pid: ppid for pid, (ppid, _) in tree.items()}, 2: 1, 3: 2}
                at, seen = target, set()
                while at != supervisor:
                    assert at not in seen
                    seen.add(at)
                    at = parent[at]
