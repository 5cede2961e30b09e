"""The chaos run: the supervised pipeline on a changing population of workspace processes
while random stages are SIGKILLed. Used by the suite (short) and ``bench/chaos.py`` (long).

Verdicts and rounds are read from the tap: a verdict where match or enforce emits it, a round
where the filter says it is through (its ``Filtered`` record, with the round's start time), so
"a process that lived two rounds" means two rounds that really completed while it existed — a
round lost to a kill does not count. The tap hub is the instrument, so it is the one process
never killed here (its own restart is tested in test_pipeline.py).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from simulation.fakeproc import FakeProcfs
from simulation.harness import TAPHUB_LABEL, Pipeline, stat_of, tapping, wait_until
from stages.procfs import process_state

INTERVAL = 0.2


@dataclass
class Life:
    pid: int
    starttime: int
    born: float
    died: float = float("inf")


@dataclass
class ChaosReport:
    seconds: float
    kills: dict[str, int] = field(default_factory=dict)
    rounds: int = 0
    processes: int = 0
    lived_two_rounds: int = 0
    without_verdict: list[int] = field(default_factory=list)
    zombies: list[int] = field(default_factory=list)
    supervisor_rss_kb: tuple[int, int] = (0, 0)
    peak_rss_kb: dict[str, int] = field(default_factory=dict)
    # For a post-mortem: when each kill happened, and the lives of the processes missed.
    kill_times: list[tuple[float, str]] = field(default_factory=list)
    missed: list[tuple[Life, list[float]]] = field(default_factory=list)


def _status(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _kill_one(pipe: Pipeline, rng: random.Random, report: ChaosReport) -> None:
    """SIGKILL one stage process, chosen at random (the tap hub excepted), noting the peak
    memory of each stage first."""
    children = pipe.children()
    for stage, pid in children.items():
        name = stage.split("/")[0]
        report.peak_rss_kb[name] = max(report.peak_rss_kb.get(name, 0), _status(pid, "VmHWM"))
    label, victim = rng.choice(sorted(kv for kv in children.items() if kv[0] != TAPHUB_LABEL))
    os.kill(victim, signal.SIGKILL)
    report.kill_times.append((time.time(), label))
    name = label.split("/")[0]
    report.kills[name] = report.kills.get(name, 0) + 1


def run_chaos(tmp: Path, seconds: float, kill_every: float, seed: int = 1) -> ChaosReport:
    rng = random.Random(seed)  # noqa: S311 - a reproducible schedule, not a secret
    fs = FakeProcfs(tmp / "proc", atomic=True)
    fs.add(1, 0, ["/sbin/init"])
    fs.workspace(10, 11)
    env = {
        "PROCSMITH_SCAN__INTERVAL": f"{int(INTERVAL * 1000)}ms",
        "PROCSMITH_FILTER__ACK_TIMEOUT": "1s",
        "PROCSMITH_FILTER__MAX_ATTEMPTS": "50",
        "PROCSMITH_SUPERVISOR__CRASH_LIMIT": "1000",
        "PROCSMITH_SUPERVISOR__BACKOFF_MAX": "500ms",
    }
    report = ChaosReport(seconds)
    lives: dict[int, Life] = {}
    with Pipeline(fs.root, env) as pipe, tapping(pipe, "filter", "match", "enforce") as tap:
        pipe.wait_flowing()
        rss_start = _status(pipe.pid, "VmRSS")
        next_pid, next_kill = 1000, time.monotonic() + kill_every
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            now = time.time()
            pid = next_pid
            next_pid += 1
            fs.add(pid, 11, ["worker", str(pid)])
            lives[pid] = Life(pid, 1000 + pid, now, now + rng.uniform(0.05, 3.0))
            for life in lives.values():
                if life.died <= now and (fs.root / str(life.pid)).exists():
                    fs.remove(life.pid)
            if time.monotonic() >= next_kill:
                _kill_one(pipe, rng, report)
                # From this kill, not from the schedule: a loop slowed by load must not fire
                # kills back to back. Two stages killed within one ack_timeout is a double
                # fault the design does not cover (see the README's Reliability section).
                next_kill = time.monotonic() + kill_every
            time.sleep(0.05)
        for life in lives.values():  # the survivors live on until the end
            if life.died > time.time():
                life.died = float("inf")

        def rounds() -> list[float]:
            return [float(r["record"]["started"]) for r in tap.of("filter", "filtered")]

        def due() -> set[int]:
            # A round's start is its earliest shard's; each shard starts its rounds at its own
            # random phase, so the one reading a pid may start up to an interval later.
            starts = rounds()
            return {
                life.pid
                for life in lives.values()
                if sum(life.born <= s and s + INTERVAL + 0.05 < life.died for s in starts) >= 2
            }

        def missing() -> set[int]:
            judged = {*tap.judged("match"), *tap.judged("enforce")}
            return due() - judged

        with contextlib.suppress(AssertionError):  # what is missing is reported below
            wait_until(
                "every process that lived two rounds judged", lambda: not missing(), timeout=60
            )
        report.without_verdict = sorted(missing())
        starts = rounds()
        for pid in report.without_verdict:
            life = lives[pid]
            report.missed.append((life, [s for s in starts if life.born <= s < life.died]))
        report.lived_two_rounds = len(due())
        report.processes = len(lives)
        report.rounds = len(rounds())
        # Give the supervisor a moment to reap the last victim, then look for zombies.
        time.sleep(0.5)
        report.zombies = [k for k in pipe.children().values() if process_state(k) == "Z"]
        report.supervisor_rss_kb = (rss_start, _status(pipe.pid, "VmRSS"))
        if stat_of(pipe.pid) is None:
            raise AssertionError("the supervisor died during the chaos run")
    return report
