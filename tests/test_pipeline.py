"""The supervised pipeline as real processes over real ZeroMQ sockets (issue #3)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.config import load_config
from pipeline.wiring import STAGE_NAMES, replicas
from simulation.fakeproc import FakeProcfs
from simulation.harness import (
    Pipeline,
    children_of,
    procsmith,
    resident_kib,
    stat_of,
    tapping,
    wait_until,
)
from simulation.workspace import SimulatedTree, python_node, sleeper, workspace
from stages.signatures import engine_library


def once(proc_root: Path | str) -> list[dict[str, Any]]:
    out = subprocess.run(
        procsmith("once", "--proc-root", str(proc_root)), capture_output=True, check=True
    ).stdout
    return [orjson.loads(line) for line in out.splitlines()]


def gone(pid: int) -> Callable[[], bool]:
    return lambda: stat_of(pid) is None


def key(rec: dict[str, Any]) -> bytes:
    return orjson.dumps(rec, option=orjson.OPT_SORT_KEYS)


def big_tree(fs: FakeProcfs, workspaces: int = 10, users: int = 150, others: int = 500) -> None:
    """≥ 2,000 processes: workspaces with flat and nested user processes, and outsiders."""
    pid = 100
    for w in range(workspaces):
        ring1, sup = pid, pid + 1
        fs.workspace(ring1, sup, workspace_id=f"ws-{w}", instance_id=f"inst-{w}")
        parent = sup
        for u in range(users):
            pid_u = pid + 2 + u
            fs.add(pid_u, parent if u % 3 else sup, ["node", f"w{w}", str(u)])
            parent = pid_u
        pid += users + 10
    for o in range(others):
        fs.add(pid + o, 1, ["sshd", str(o)])


def test_run_equals_once_on_a_fake_tree(tmp_path: Path) -> None:
    fs = FakeProcfs(tmp_path / "proc", atomic=True)
    fs.add(1, 0, ["/sbin/init"])
    with Pipeline(fs.root) as pipe, tapping(pipe, "match") as tap:
        big_tree(fs)
        assert len(os.listdir(fs.root)) >= 2000
        expected = once(fs.root)
        assert len(expected) == 1500
        wait_until("every process judged", lambda: len(tap.judged()) >= len(expected), log=pipe.log)
        assert {key(r) for r in tap.judged().values()} == {key(r) for r in expected}


@pytest.mark.realproc
def test_run_equals_once_on_real_proc() -> None:
    users = [sleeper("a"), python_node("b", ["python3", "worker"], [sleeper("b-child")])]
    with Pipeline("/proc") as pipe, tapping(pipe, "match") as tap:
        with SimulatedTree(workspace(users, workspace_id="ws-pipe")) as sim:
            want = {sim.pids[x] for x in ("a", "b", "b-child")}
            wait_until("the workspace judged", lambda: want <= tap.judged().keys(), log=pipe.log)
            expected = [r for r in once("/proc") if r["workspace"]["workspace_id"] == "ws-pipe"]
            judged = tap.judged()
            # The supervisor compiled the signatures, then let go of YARA-X's code (most of
            # it the compiler's): what a match replica runs, it reads in for itself.
            engine = engine_library()
            held = resident_kib(pipe.pid, engine)
            assert held * 4 < resident_kib(children_of(pipe.pid)["match/0"], engine)
        # Another workspace may run on this node; the comparison is of ours.
        ours = {p: r for p, r in judged.items() if r["workspace"]["workspace_id"] == "ws-pipe"}
        assert {r["pid"] for r in expected} == want == set(ours)
        assert {key(r) for r in ours.values()} == {key(r) for r in expected}
        # Nothing outside a workspace reached match.
        assert all(r["workspace"] is not None for r in judged.values())


def test_slow_match_never_stalls_rounds_and_loses_nothing(tmp_path: Path) -> None:
    """match is ~1000x slower per process than scanning (50 ms against tens of µs) and its
    queues are tiny: rounds go on completing, drops are counted, and every dropped process
    is offered again until it is judged (D7)."""
    fs = FakeProcfs(tmp_path / "proc", atomic=True)
    fs.add(1, 0, ["/sbin/init"])
    slow = {
        "PROCSMITH_MATCH__REPLICAS": "1",
        "PROCSMITH_MATCH__DELAY": "50ms",
        "PROCSMITH_TRANSPORT__HWM": "5",
        # match takes no more than this into its own queue: the filter's sends find no room
        # (the default, 10,000, would take all 200 at once).
        "PROCSMITH_MATCH__QUEUE": "5",
        # With queues this small a verdict can find no room in time under load; it is then
        # offered again after ack_timeout, which should not be the default minute here.
        "PROCSMITH_FILTER__ACK_TIMEOUT": "2s",
        "PROCSMITH_FILTER__MAX_ATTEMPTS": "50",
    }
    n = 200
    with Pipeline(fs.root, slow) as pipe, tapping(pipe, "match") as tap:
        fs.workspace(10, 11)
        for pid in range(100, 100 + n):
            fs.add(pid, 11, ["job", str(pid)])
        wait_until(
            "filter to drop",
            lambda: pipe.metrics().get("procsmith_stage_records_dropped_total", stage="filter"),
            log=pipe.log,
        )
        rounds = pipe.metrics().get("procsmith_rounds_total")
        wait_until(
            "five more rounds",
            lambda: pipe.metrics().get("procsmith_rounds_total") >= rounds + 5,
            log=pipe.log,
        )
        assert len(tap.judged()) < n  # the rounds completed while match was still behind
        wait_until(
            "every process judged", lambda: len(tap.judged()) == n, timeout=120, log=pipe.log
        )
        m = pipe.metrics()
        assert set(tap.judged()) == set(range(100, 100 + n))
        assert m.get("procsmith_stage_records_dropped_total", stage="filter") > 0
        assert m.get("procsmith_stage_records_dropped_total", stage="scan") == 0
        assert m.get("procsmith_stage_records_dropped_total", stage="tree") == 0
        # Each drop came back: as a miss the next round (a process never handed on), or as a
        # retry after ack_timeout (one handed on whose resend was dropped): offers exceed n.
        misses = m.get("gitpod_agent_smith_procfs_detector_cache_use_total", use="miss")
        assert misses + m.get("procsmith_filter_retries_total") > n


def test_a_round_larger_than_the_queues_is_handed_on_as_match_takes_it(tmp_path: Path) -> None:
    """400 new processes against queues of 5: the filter holds what finds no room and sends
    it as match drains its queue, within the round; none is dropped and offered again."""
    fs = FakeProcfs(tmp_path / "proc", atomic=True)
    fs.add(1, 0, ["/sbin/init"])
    # Rounds 3 s apart: time for match to take all 400 (in ms) before the next round would
    # make what is still held stale, however loaded the machine.
    small = {
        "PROCSMITH_TRANSPORT__HWM": "5",
        "PROCSMITH_MATCH__REPLICAS": "1",
        "PROCSMITH_SCAN__INTERVAL": "3s",
    }
    n = 400
    with Pipeline(fs.root, small) as pipe:
        fs.workspace(10, 11)
        for pid in range(100, 100 + n):
            fs.add(pid, 11, ["job", str(pid)])

        def judged() -> bool:  # as the filter counts it (the tap, at hwm 5, drops frames)
            m = pipe.metrics()
            sent = m.get("procsmith_stage_records_out_total", stage="filter")
            return sent >= n and m.get("procsmith_filter_inflight") == 0

        wait_until("every verdict back at the filter", judged, log=pipe.log)
        m = pipe.metrics()
        assert m.get("procsmith_stage_records_out_total", stage="filter") == n  # each once
        assert m.get("procsmith_stage_records_dropped_total", stage="filter") == 0
        assert m.get("gitpod_agent_smith_procfs_detector_cache_use_total", use="miss") == n
        assert m.get("procsmith_filter_retries_total") == 0


def test_kill_9_of_each_stage_is_restarted_and_delivery_continues(tmp_path: Path) -> None:
    """Delivery is read from match's input counter, not the tap: the tap is lossy by design
    (a record published while a restarted hub is reconnecting is gone)."""
    fs = FakeProcfs(tmp_path / "proc", atomic=True)
    fs.add(1, 0, ["/sbin/init"])
    fs.workspace(10, 11)

    def judged() -> float:
        return pipe.metrics().get("procsmith_stage_records_in_total", stage="match")

    with Pipeline(fs.root) as pipe:
        labels = [
            "classify/0", "enforce/0", "events/0", "filter/0", "match/0", "match/1",
            "scan/0", "scan/1", "taphub/0", "tree/0",
        ]  # fmt: skip
        wait_until("every stage", lambda: sorted(pipe.children()) == labels, log=pipe.log)
        for n, label in enumerate(labels):
            old = pipe.child(label)
            os.kill(old, signal.SIGKILL)
            wait_until(f"{label} gone", gone(old), log=pipe.log)
            assert pipe.child(label) != old
            before = judged()
            fs.add(1000 + n, 11, ["after-kill", label])

            def delivered(before: float = before) -> bool:
                return judged() > before

            wait_until(f"delivery after killing {label}", delivered, log=pipe.log)
        m = pipe.metrics()
        for stage in ("scan", "tree", "classify", "filter", "match", "enforce", "events", "taphub"):
            assert m.get("procsmith_stage_restarts_total", stage=stage) >= 1, stage
            assert m.get("procsmith_stage_up", stage=stage, instance="0") == 1


def test_crash_loop_gives_up_loudly(tmp_path: Path) -> None:
    fs = FakeProcfs(tmp_path / "proc")
    fs.add(1, 0, ["/sbin/init"])
    env = {
        "PROCSMITH_SUPERVISOR__CRASH_LIMIT": "3",
        "PROCSMITH_SUPERVISOR__BACKOFF_INITIAL": "50ms",
    }
    pipe = Pipeline(fs.root, env).start()
    assert pipe.proc is not None
    for _ in range(3):
        old = pipe.child("classify/0")
        os.kill(old, signal.SIGKILL)
        wait_until("classify gone", gone(old), log=pipe.log)
    assert pipe.proc.wait(30) == 1
    log = pipe.log.read_text()
    assert "crash loop: classify/0 died 3 times" in log
    assert not [p for p in pipe.child_pids if stat_of(p) is not None]


def test_health_fails_while_a_stage_is_down(tmp_path: Path) -> None:
    fs = FakeProcfs(tmp_path / "proc")
    fs.add(1, 0, ["/sbin/init"])
    with Pipeline(fs.root, {"PROCSMITH_SUPERVISOR__BACKOFF_INITIAL": "3s"}) as pipe:
        wait_until("healthy", lambda: pipe.health() == (200, "ok\n"), log=pipe.log)
        os.kill(pipe.child("tree/0"), signal.SIGKILL)
        _, body = wait_until(
            "unhealthy", lambda: (h := pipe.health())[0] == 503 and h, log=pipe.log
        )
        assert "tree/0 is down" in body
        assert pipe.metrics().get("procsmith_stage_up", stage="tree", instance="0") == 0
        wait_until("healthy again", lambda: pipe.health()[0] == 200, log=pipe.log)


def test_tap_filter_shows_records_while_the_pipeline_runs(tmp_path: Path) -> None:
    fs = FakeProcfs(tmp_path / "proc", atomic=True)
    fs.add(1, 0, ["/sbin/init"])
    fs.workspace(10, 11)
    with Pipeline(fs.root) as pipe, tapping(pipe, "filter") as tap:
        fs.add(50, 11, ["vim", "notes.txt"])
        rec = wait_until("filter's record", lambda: tap.of("filter", "process"), log=pipe.log)[0]
        assert rec["record"]["pid"] == 50
        assert rec["record"]["cmdline"] == ["vim", "notes.txt"]
        assert rec["record"]["workspace"]["pid"] == 11


def test_metrics_report_the_tree(tmp_path: Path) -> None:
    fs = FakeProcfs(tmp_path / "proc")
    fs.add(1, 0, ["/sbin/init"])
    for w in range(3):
        fs.workspace(100 * (w + 1), 100 * (w + 1) + 1, workspace_id=f"ws{w}")
        for u in range(20):
            fs.add(100 * (w + 1) + 10 + u, 100 * (w + 1) + 1, ["job"])
    for o in range(40):
        fs.add(1000 + o, 1, ["daemon"])
    fs.add(2000, 1999, ["orphan"])  # its parent is a placeholder in the index
    expected_index = 1 + 3 * 22 + 40 + 1 + 2  # processes, plus placeholders for pids 0 and 1999
    with Pipeline(fs.root) as pipe:
        wait_until(
            "two rounds", lambda: pipe.metrics().get("procsmith_rounds_total") >= 2, log=pipe.log
        )
        # The filter has sent them all; match may still be taking them off its queue.
        wait_until(
            "match to receive the 60",
            lambda: pipe.metrics().get("procsmith_stage_records_in_total", stage="match") >= 60,
            log=pipe.log,
        )
        m = pipe.metrics()
        assert m.get("gitpod_agent_smith_procfs_detector_index_size") == expected_index
        assert m.get("gitpod_agent_smith_procfs_detector_cache_use_total", use="miss") == 60
        assert m.get("gitpod_agent_smith_procfs_detector_workspace_count") == 3
        assert m.get("procsmith_stage_records_in_total", stage="match") == 60


def test_sigint_stops_too(tmp_path: Path) -> None:
    fs = FakeProcfs(tmp_path / "proc")
    fs.add(1, 0, ["/sbin/init"])
    pipe = Pipeline(fs.root).start()
    config = load_config()  # the defaults the pipeline runs with: every stage, the tap hub
    every = 1 + sum(replicas(name, config) for name in STAGE_NAMES)
    wait_until("all stages", lambda: len(pipe.children()) == every, log=pipe.log)
    assert pipe.stop(signal.SIGINT) == 0
    assert not [p for p in pipe.child_pids if stat_of(p) is not None]


def test_a_finding_made_while_enforce_is_down_is_not_lost(tmp_path: Path) -> None:
    """match waits for room (send_timeout), then leaves the process unacknowledged; the
    filter offers it again after ack_timeout, and the finding reaches enforce once it is back."""
    fs = FakeProcfs(tmp_path / "proc", atomic=True)
    fs.add(1, 0, ["/sbin/init"])
    fs.workspace(10, 11)
    env = {
        "PROCSMITH_TRANSPORT__SEND_TIMEOUT": "100ms",
        "PROCSMITH_FILTER__ACK_TIMEOUT": "1s",
        "PROCSMITH_FILTER__MAX_ATTEMPTS": "20",
        "PROCSMITH_SUPERVISOR__BACKOFF_INITIAL": "3s",
        "PROCSMITH_SUPERVISOR__BACKOFF_MAX": "3s",
    }
    with Pipeline(fs.root, env) as pipe:
        pipe.wait_flowing()
        os.kill(pipe.child("enforce/0"), signal.SIGKILL)
        wait_until("enforce down", lambda: "enforce/0" not in pipe.children(), log=pipe.log)
        fs.add(20, 11, ["./xmrig", "-o", "pool.example.invalid:3333"])
        wait_until(
            "match to give the finding up",
            lambda: pipe.metrics().get("procsmith_stage_records_dropped_total", stage="match"),
            log=pipe.log,
        )
        line = wait_until("the finding", pipe.out.read_bytes, log=pipe.log)
        finding = orjson.loads(line.splitlines()[0])
        assert (finding["process"]["pid"], finding["classifier"]) == (20, "commandline")
        assert pipe.metrics().get("procsmith_filter_retries_total") >= 1


def test_a_finding_lost_with_enforce_is_made_again(tmp_path: Path) -> None:
    """enforce, not match, acknowledges a process with a finding, once the finding is written:
    a finding that dies queued inside enforce leaves its process unacknowledged, so the
    filter offers it again and the finding is made again."""
    fs = FakeProcfs(tmp_path / "proc", atomic=True)
    fs.add(1, 0, ["/sbin/init"])
    fs.workspace(10, 11)
    env = {"PROCSMITH_FILTER__ACK_TIMEOUT": "1s", "PROCSMITH_FILTER__MAX_ATTEMPTS": "20"}
    with Pipeline(fs.root, env) as pipe:
        pipe.wait_flowing()
        enforce = pipe.child("enforce/0")
        os.kill(enforce, signal.SIGSTOP)  # it takes nothing more off its queue
        fs.add(20, 11, ["./xmrig", "-o", "pool.example.invalid:3333"])
        wait_until(
            "match to hand the finding to enforce",
            lambda: pipe.metrics().get("procsmith_stage_records_out_total", stage="match"),
            log=pipe.log,
        )
        os.kill(enforce, signal.SIGKILL)  # the finding dies in its queue
        line = wait_until("the finding", pipe.out.read_bytes, log=pipe.log)
        assert orjson.loads(line.splitlines()[0])["process"]["pid"] == 20
        assert pipe.metrics().get("procsmith_filter_retries_total") >= 1


def test_a_scan_slower_than_its_interval_still_stops_on_sigterm(tmp_path: Path) -> None:
    """Rounds due back to back must not keep a stage from hearing its stop signal. (20,000
    processes take longer than 50 ms to scan even in the steady state.)"""
    shm = Path("/dev/shm")
    base = Path(tempfile.mkdtemp(dir=shm)) if os.access(shm, os.W_OK) else tmp_path
    fs = FakeProcfs(base / "proc")
    fs.add(1, 0, ["/sbin/init"])
    for pid in range(2, 20_000):
        fs.add(pid, 1, ["daemon"], exe=None)
    env = {"PROCSMITH_SCAN__INTERVAL": "50ms", "PROCSMITH_SCAN__SHARDS": "1"}
    pipe = Pipeline(fs.root, env).start()
    pipe.wait_flowing(rounds=3)
    try:
        assert pipe.stop() == 0
        assert "did not stop in time" not in pipe.log.read_text()
    finally:
        shutil.rmtree(base, ignore_errors=True)
