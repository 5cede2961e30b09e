"""The reference's own test cases (proc_test.go), as fake procfs trees through `procsmith once`
and the library API. Adjusted where D4/D6 say so; each adjustment is named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from pipeline.configschema import Config
from pipeline.local import LocalDetector
from simulation.fakeproc import RING1, SUPERVISOR, FakeProcfs, reference_hash
from stages.base.catalog import CACHE_USE, INDEX_SIZE, WORKSPACE_COUNT
from stages.base.meter import Tally
from stages.classify import build_index, classify
from stages.shardreader import ShardReader
from stages.tree import merge


def once(root: Path) -> list[dict[str, object]]:
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "once", "--proc-root", str(root)],
        capture_output=True,
        check=True,
    ).stdout
    return [orjson.loads(line) for line in out.splitlines()]


def kinds_of(root: Path) -> dict[int, tuple[str, str, int]]:
    """pid → (kind, workspace id, workspace pid) for every process inside a workspace."""
    scan = ShardReader(str(root), Tally()).read(1)
    c = classify(build_index(merge(1, [scan], 1).procs))
    return {pid: (k.value, ws.workspace_id, ws.pid) for pid, (k, ws) in c.inside.items()}


def test_happy_path(fakeproc: FakeProcfs) -> None:
    fakeproc.workspace(2, 3, workspace_id="foobar", instance_id="baz")
    fakeproc.add(4, 3, ["bad-actor", "has", "args"])
    assert kinds_of(fakeproc.root) == {
        2: ("sandbox", "foobar", 3),
        3: ("supervisor", "foobar", 3),
        4: ("user_workload", "foobar", 3),
    }
    (rec,) = once(fakeproc.root)
    assert rec == {
        "pid": 4,
        "ppid": 3,
        "starttime": 1004,
        "hash": reference_hash(4, 3, 1004),
        "path": f"{fakeproc.root}/4/exe",
        "cmdline": ["bad-actor", "has", "args"],
        "kind": "user_workload",
        "workspace": {
            "owner_id": "owner",
            "workspace_id": "foobar",
            "instance_id": "baz",
            "git_url": "https://example.com/repo",
            "pid": 3,
        },
    }


def test_mixed_depths(fakeproc: FakeProcfs) -> None:
    fakeproc.workspace(2, 3, workspace_id="foobar")
    fakeproc.workspace(4, 5, parent=3, workspace_id="bla")
    # D6 adjusts the reference: the nested `supervisor init` (5) is a user workload, not exempt.
    assert kinds_of(fakeproc.root) == {
        2: ("sandbox", "foobar", 3),
        3: ("supervisor", "foobar", 3),
        4: ("user_workload", "foobar", 3),
        5: ("user_workload", "foobar", 3),
    }
    assert [r["pid"] for r in once(fakeproc.root)] == [4, 5]


def test_deeper_workspace(fakeproc: FakeProcfs) -> None:
    fakeproc.add(2, 1, ["not-a-workspace"])
    fakeproc.add(3, 2, ["still", "not"])
    fakeproc.workspace(4, 5, parent=3, workspace_id="bla", instance_id="blabla")
    fakeproc.workspace(6, 7, parent=3, workspace_id="second-ws", instance_id="second-ws")
    assert kinds_of(fakeproc.root) == {
        4: ("sandbox", "bla", 5),
        5: ("supervisor", "bla", 5),
        6: ("sandbox", "second-ws", 7),
        7: ("supervisor", "second-ws", 7),
    }
    assert once(fakeproc.root) == []


def test_run_detector_two_rounds(fakeproc: FakeProcfs) -> None:
    """TestRunDetector: the second round reports only the process that is new."""
    fakeproc.workspace(2, 3, workspace_id="foobar", instance_id="baz")
    fakeproc.add(4, 3, ["bad-actor", "has", "args"])
    tally = Tally()
    det = LocalDetector(Config(proc_root=str(fakeproc.root)), tally)
    assert [p.cmdline for p in det.round()] == [["bad-actor", "has", "args"]]
    fakeproc.add(5, 3, ["another-bad-actor", "has", "args"])
    assert [p.cmdline for p in det.round()] == [["another-bad-actor", "has", "args"]]
    assert tally.get(CACHE_USE, use="miss") == 2
    assert tally.get(CACHE_USE, use="hit") == 1
    assert tally.get(INDEX_SIZE) == 6  # pids 0 (placeholder parent of 1) to 5
    assert tally.get(WORKSPACE_COUNT) == 1


def test_workspace_ids_missing_are_empty(fakeproc: FakeProcfs) -> None:
    fakeproc.add(2, 1, RING1, env={"GITPOD_WORKSPACE_ID": "only-this"})
    fakeproc.add(3, 2, SUPERVISOR)
    fakeproc.add(4, 3, ["x"])
    (rec,) = once(fakeproc.root)
    assert rec["workspace"] == {
        "owner_id": "",
        "workspace_id": "only-this",
        "instance_id": "",
        "git_url": "",
        "pid": 3,
    }


@pytest.mark.parametrize("n", [0, 1, 2, 3])
def test_hash_matches_reference_formula(fakeproc: FakeProcfs, n: int) -> None:
    fakeproc.workspace(2, 3)
    pid, ppid, start = [(4, 3, 1), (70000, 3, 2**40), (4194304, 3, 2**64 - 1), (9, 3, 12345)][n]
    fakeproc.add(pid, ppid, ["x"], starttime=start)
    (rec,) = once(fakeproc.root)
    assert rec["hash"] == reference_hash(pid, ppid, start)
