"""The enforce stage's logic: JSON lines out, and penalties on real processes of this machine."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import orjson
import pytest

from simulation.workspace import SimulatedTree, sleeper, workspace
from stages.base.catalog import (
    ENFORCE_PENALTIES,
    ENFORCE_PENALTIES_REFUSED,
    ENFORCE_PENALTY_FAILURES,
    ENFORCE_WRITE_ERRORS,
)
from stages.base.meter import Tally
from stages.base.render import finding_line
from stages.base.schema import Finding, Judged, Kind, Level, Process, Workspace
from stages.enforce import Enforcer, OutputUnavailable
from stages.penalty import Action
from stages.pidcheck import current_starttime
from stages.procfs import is_running

pytestmark = pytest.mark.realproc


@pytest.fixture
def sleeper_proc() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([shutil.which("sleep") or "sleep", "86400"])
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


SIM_WS = "sim-ws"  # simulation.workspace's default workspace id


@pytest.fixture
def in_workspace() -> Iterator[tuple[SimulatedTree, Process]]:
    """A sleeper inside a simulated workspace on the real /proc, and its process record."""
    with SimulatedTree(workspace([sleeper("victim")])) as sim:
        ws = Workspace("o", SIM_WS, "i", "g", sim.pids["supervisor"])
        yield sim, process_of(sim.pids["victim"], ws=ws)


@pytest.fixture(scope="module")
def exec_target() -> Iterator[Process]:
    """A process inside a simulated workspace that exec penalties are confirmed against."""
    with SimulatedTree(workspace([sleeper("target")])) as sim:
        ws = Workspace("o", SIM_WS, "i", "g", sim.pids["supervisor"])
        yield process_of(sim.pids["target"], ws=ws)


def process_of(pid: int, *, starttime: int | None = None, ws: Workspace | None = None) -> Process:
    now = current_starttime(f"/proc/{pid}")
    assert isinstance(now, int)
    return Process(
        pid=pid,
        ppid=os.getpid(),
        starttime=now if starttime is None else starttime,
        hash=0,
        path=f"/proc/{pid}/exe",
        cmdline=["sleep", "86400"],
        kind=Kind.USER_WORKLOAD,
        workspace=ws,
    )


def finding_for(proc: Process, level: Level = Level.VERY) -> Finding:
    return Finding(proc, "xmrig-namespace-symbols", level, "signature", datetime.now(UTC))


def enforcer(tally: Tally, out: io.BytesIO | None = None, **penalties: Action) -> Enforcer:
    return Enforcer(
        tally,
        "/proc",
        penalties=penalties,
        exec_command=[sys.executable, "-c", "pass"],
        stdout=out or io.BytesIO(),
    )


def gone_or_zombie(pid: int, within: float = 10.0) -> bool:
    """Waits for ``pid`` to die (a killed child of someone else stays a zombie until reaped)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not is_running(pid):
            return True
        time.sleep(0.02)
    return False


def test_finding_written_as_json_lines(tmp_path: Path, tally: Tally) -> None:
    out = io.BytesIO()
    path = tmp_path / "findings.jsonl"
    e = Enforcer(tally, "/proc", outputs=["-", str(path)], stdout=out)
    ws = Workspace("owner", "ws", "inst", "https://example.com/r", 42)
    proc = Process(7, 6, 123, 99, "/proc/7/exe", ["./xmrig"], Kind.USER_WORKLOAD, ws)
    when = datetime(2024, 5, 1, tzinfo=UTC)
    finding = Finding(proc, "xmrig", Level.AUDIT, "commandline", when, "", "cmdline")
    assert e.handle(finding) == [finding, Judged(proc, "finding")]
    e.close()
    assert out.getvalue() == path.read_bytes() == finding_line(finding)
    line = orjson.loads(out.getvalue())
    assert line == {
        "process": {
            "pid": 7,
            "ppid": 6,
            "starttime": 123,
            "hash": 99,
            "path": "/proc/7/exe",
            "cmdline": ["./xmrig"],
            "kind": "user_workload",
            "workspace": {
                "owner_id": "owner",
                "workspace_id": "ws",
                "instance_id": "inst",
                "git_url": "https://example.com/r",
                "pid": 42,
            },
        },
        "signature": "xmrig",
        "level": "audit",
        "classifier": "commandline",
        "time": "2024-05-01T00:00:00+00:00",
        "file": "",
        "file_role": "cmdline",
    }


def test_unwritable_output(tmp_path: Path, tally: Tally) -> None:
    with pytest.raises(OutputUnavailable, match=r"cannot open .*/no/f"):
        Enforcer(tally, "/proc", outputs=[str(tmp_path / "no" / "f")])
    e = Enforcer(tally, "/proc", outputs=["/dev/full"])
    proc = Process(7, 6, 123, 99, "/proc/7/exe", [], Kind.USER_WORKLOAD)
    # Not written, so not acknowledged: only the finding (for the tap), no verdict.
    assert [type(r) for r in e.handle(finding_for(proc))] == [Finding]
    assert tally.get(ENFORCE_WRITE_ERRORS) == 1


def test_default_penalty_kills_nothing(sleeper_proc: subprocess.Popen[bytes], tally: Tally) -> None:
    e = Enforcer(tally, "/proc", stdout=io.BytesIO())
    for level in Level:
        e.handle(finding_for(process_of(sleeper_proc.pid), level))
    assert sleeper_proc.poll() is None
    assert tally.values == {}


def test_kill_process(in_workspace: tuple[SimulatedTree, Process], tally: Tally) -> None:
    sim, victim = in_workspace
    e = enforcer(tally, very="kill-process")
    e.handle(finding_for(victim))
    assert gone_or_zombie(victim.pid)
    assert tally.get(ENFORCE_PENALTIES, action="kill-process", result="ok") == 1
    assert is_running(sim.pids["supervisor"])


def test_kill_process_outside_any_workspace_is_refused(
    sleeper_proc: subprocess.Popen[bytes], in_workspace: tuple[SimulatedTree, Process], tally: Tally
) -> None:
    """A forged or stale finding: the process is real, but not in the workspace it names
    (or in none). Nothing is signalled; the refusal is counted by reason."""
    _sim, victim = in_workspace
    assert victim.workspace is not None
    e = enforcer(tally, very="kill-process")
    outsider = process_of(sleeper_proc.pid)
    e.handle(finding_for(outsider))  # no workspace at all
    e.handle(finding_for(process_of(sleeper_proc.pid, ws=victim.workspace)))
    other = Workspace("o", "another-ws", "i", "g", victim.workspace.pid)
    e.handle(finding_for(process_of(victim.pid, ws=other)))  # right tree, wrong workspace id
    assert not gone_or_zombie(sleeper_proc.pid, within=0.2)
    assert not gone_or_zombie(victim.pid, within=0.2)
    refused = {
        reason: tally.get(ENFORCE_PENALTIES_REFUSED, reason=reason)
        for reason in ("no_workspace", "outside", "other_workspace")
    }
    assert refused == {"no_workspace": 1, "outside": 1, "other_workspace": 1}
    assert tally.get(ENFORCE_PENALTIES, action="kill-process", result="refused") == 3
    assert tally.get(ENFORCE_PENALTIES, action="kill-process", result="ok") == 0


def test_kill_process_only_at_its_level(
    sleeper_proc: subprocess.Popen[bytes], tally: Tally
) -> None:
    e = enforcer(tally, very="kill-process")
    e.handle(finding_for(process_of(sleeper_proc.pid), Level.AUDIT))
    assert sleeper_proc.poll() is None


def test_changed_starttime_signals_nothing(
    sleeper_proc: subprocess.Popen[bytes], tally: Tally
) -> None:
    """The pid is alive but its starttime is not the finding's: it is someone else now."""
    e = enforcer(tally, very="kill-process")
    proc = process_of(sleeper_proc.pid)
    for starttime in (proc.starttime - 1, proc.starttime + 1):
        e.handle(finding_for(process_of(sleeper_proc.pid, starttime=starttime)))
    assert sleeper_proc.poll() is None
    assert tally.get(ENFORCE_PENALTY_FAILURES, action="kill-process", reason="reused") == 2
    assert tally.get(ENFORCE_PENALTIES, action="kill-process", result="failed") == 2


def test_vanished_and_unsafe_targets(sleeper_proc: subprocess.Popen[bytes], tally: Tally) -> None:
    e = enforcer(tally, very="kill-process")
    proc = process_of(sleeper_proc.pid)
    sleeper_proc.kill()
    sleeper_proc.wait()
    e.handle(finding_for(proc))
    mine = Process(os.getpid(), 1, 1, 0, "/proc/self/exe", [], Kind.USER_WORKLOAD)
    e.handle(finding_for(mine))
    failures = {
        reason: tally.get(ENFORCE_PENALTY_FAILURES, action="kill-process", reason=reason)
        for reason in ("vanished", "unsafe_pid")
    }
    assert failures == {"vanished": 1, "unsafe_pid": 1}


def test_kill_workspace_signals_its_supervisor(tally: Tally) -> None:
    with SimulatedTree(workspace([sleeper("miner")])) as sim:
        ws = Workspace("o", SIM_WS, "i", "g", sim.pids["supervisor"])
        miner = process_of(sim.pids["miner"], ws=ws)
        e = enforcer(tally, very="kill-workspace")
        # A finding whose process started before the supervisor cannot be its workspace's.
        e.handle(finding_for(process_of(sim.pids["miner"], starttime=1, ws=ws)))
        assert not gone_or_zombie(sim.pids["supervisor"], within=0.2)
        e.handle(finding_for(miner))
        assert gone_or_zombie(sim.pids["supervisor"])
        assert not gone_or_zombie(sim.pids["miner"], within=0.2)  # only the supervisor
    assert tally.get(ENFORCE_PENALTIES, action="kill-workspace", result="ok") == 1
    assert tally.get(ENFORCE_PENALTY_FAILURES, action="kill-workspace", reason="reused") == 1


def test_kill_workspace_naming_another_process_as_supervisor(
    sleeper_proc: subprocess.Popen[bytes], tally: Tally
) -> None:
    """The issue's attack: kill-workspace naming a root process (here one this test started,
    which started before the victim) as the supervisor of a process outside any workspace."""
    with subprocess.Popen([shutil.which("sleep") or "sleep", "86400"]) as victim:
        try:
            ws = Workspace("o", SIM_WS, "i", "g", sleeper_proc.pid)
            enforcer(tally, very="kill-workspace").handle(
                finding_for(process_of(victim.pid, ws=ws))
            )
            assert sleeper_proc.poll() is None and victim.poll() is None
            assert tally.get(ENFORCE_PENALTIES_REFUSED, reason="outside") == 1
            assert tally.get(ENFORCE_PENALTIES, action="kill-workspace", result="ok") == 0
        finally:
            victim.kill()


def test_kill_workspace_without_a_workspace(
    sleeper_proc: subprocess.Popen[bytes], tally: Tally
) -> None:
    enforcer(tally, audit="kill-workspace").handle(
        finding_for(process_of(sleeper_proc.pid), Level.AUDIT)
    )
    assert sleeper_proc.poll() is None
    assert tally.get(ENFORCE_PENALTY_FAILURES, action="kill-workspace", reason="no_workspace") == 1


def _exec_enforcer(tally: Tally, command: list[str], timeout: float = 30.0) -> Enforcer:
    return Enforcer(
        tally,
        "/proc",
        penalties={"barely": "exec"},
        exec_command=command,
        exec_timeout=timeout,
        stdout=io.BytesIO(),
    )


def test_exec_gets_the_finding_on_stdin(tmp_path: Path, tally: Tally, exec_target: Process) -> None:
    out = tmp_path / "got"
    script = "import sys; open(sys.argv[1], 'wb').write(sys.stdin.buffer.read())"
    e = _exec_enforcer(tally, [sys.executable, "-c", script, str(out)])
    proc = msgspec.structs.replace(exec_target, cmdline=["a b", "; rm -rf /"])
    finding = finding_for(proc, Level.BARELY)
    e.handle(finding)
    assert out.read_bytes() == finding_line(finding)
    assert tally.get(ENFORCE_PENALTIES, action="exec", result="ok") == 1


def test_exec_argv_is_exactly_the_configured_one(
    tmp_path: Path, tally: Tally, exec_target: Process
) -> None:
    """No shell, no interpolation: a finding's text never becomes part of a command."""
    out = tmp_path / "argv"
    script = "import sys, json; open(sys.argv[1], 'w').write(json.dumps(sys.argv[1:]))"
    command = [sys.executable, "-c", script, str(out), "$(touch pwned)", "; rm -rf /", "`id`"]
    e = _exec_enforcer(tally, command)
    proc = msgspec.structs.replace(exec_target, cmdline=["$(reboot)", "|", "sh"])
    e.handle(finding_for(proc, Level.BARELY))
    assert orjson.loads(out.read_bytes()) == command[3:]
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


@pytest.mark.parametrize(
    ("command", "timeout", "reason"),
    [
        ([sys.executable, "-c", "raise SystemExit(3)"], 30.0, "exit_status"),
        (["/nonexistent/notify"], 30.0, "spawn_error"),
        ([sys.executable, "-c", "import time; time.sleep(60)"], 0.2, "timeout"),
    ],
)
def test_exec_failures_counted(
    tally: Tally, command: list[str], timeout: float, reason: str, exec_target: Process
) -> None:
    _exec_enforcer(tally, command, timeout).handle(finding_for(exec_target, Level.BARELY))
    assert tally.get(ENFORCE_PENALTY_FAILURES, action="exec", reason=reason) == 1
    assert tally.get(ENFORCE_PENALTIES, action="exec", result="failed") == 1


def test_exec_for_a_process_outside_any_workspace_runs_nothing(
    tmp_path: Path, tally: Tally
) -> None:
    out = tmp_path / "ran"
    e = _exec_enforcer(tally, [sys.executable, "-c", f"open({str(out)!r}, 'w')"])
    proc = Process(7, 6, 123, 99, "/proc/7/exe", [], Kind.USER_WORKLOAD)
    e.handle(finding_for(proc, Level.BARELY))
    assert not out.exists()
    assert tally.get(ENFORCE_PENALTIES, action="exec", result="refused") == 1
    assert tally.get(ENFORCE_PENALTIES_REFUSED, reason="no_workspace") == 1
