"""What the pipeline benchmarks share: a supervised pipeline (``simulation.harness.Pipeline``) whose
enforce stage writes findings to a file, that file tailed, and the stage processes' memory.

Findings are the observable end of the pipeline: every process the benchmarks create has a
command line the bundled rules flag, so each one judged becomes one line in enforce's output.
The tap is not used to count anything (it is lossy by design).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import orjson

from simulation.harness import FAST, Metrics, Pipeline, children_of

# argv[0] the bundled command-line rules flag ("xmrig", audit level); nothing is killed: the
# default penalty of every level is "log".
MINER_ARGV0 = "xmrig-bench"


def pipeline_env(output: Path, **keys: str) -> dict[str, str]:
    """Environment for ``Pipeline``: the defaults of config/procsmith.toml (the harness's fast
    test settings undone), findings to ``output``, plus ``keys`` (``SCAN__INTERVAL="1s"``)."""
    defaults = {
        "PROCSMITH_SCAN__INTERVAL": "2s",
        "PROCSMITH_TREE__GRACE": "1s",
        "PROCSMITH_SUPERVISOR__BACKOFF_INITIAL": "500ms",
        "PROCSMITH_SUPERVISOR__BACKOFF_MAX": "30s",
    }
    assert defaults.keys() == FAST.keys()  # every fast setting of the harness is undone
    env = {**defaults, "PROCSMITH_ENFORCE__OUTPUT": f'["{output}"]'}
    env.update({f"PROCSMITH_{k}": v for k, v in keys.items()})
    return env


class Findings:
    """Tails enforce's output: when each finding's line was first seen, by pid."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.first_seen: dict[int, float] = {}  # pid → time.monotonic() of its first line
        self.lines = 0
        self._offset = 0
        self._partial = b""

    def poll(self) -> int:
        """Read what was appended since the last call; returns how many new lines."""
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return 0
        now = time.monotonic()
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            pid = orjson.loads(line)["process"]["pid"]
            self.first_seen.setdefault(pid, now)
        self.lines += len(lines)
        return len(lines)

    def wait(self, pids: set[int], timeout: float, every: float = 0.005) -> bool:
        """Poll until every pid in ``pids`` has a finding, or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            if pids <= self.first_seen.keys():
                return True
            time.sleep(every)
        self.poll()
        return pids <= self.first_seen.keys()


def scrape(pipe: Pipeline, attempts: int = 20) -> Metrics:
    """The pipeline's metrics. A scrape that fails is tried again: one can catch a stage's
    metrics file created but not yet written while the stage starts."""
    for _ in range(attempts - 1):
        try:
            return pipe.metrics()
        except OSError:  # URLError, RemoteDisconnected, ConnectionResetError
            time.sleep(0.1)
    return pipe.metrics()


def wait_rounds(pipe: Pipeline, n: float, timeout: float = 60.0) -> Metrics:
    """Wait until ``n`` rounds have reached the filter; the metrics then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = scrape(pipe)
        if m.get("procsmith_rounds_total") >= n:
            return m
        time.sleep(0.05)
    raise TimeoutError(f"{n:g} rounds did not complete within {timeout:g}s\n{pipe.log}")


@dataclass(frozen=True)
class StageMemory:
    label: str  # "supervisor", "scan/0", ...
    rss: int  # bytes
    pss: int
    stat_fds: int  # descriptors open on /proc/*/stat (the scan's kept ones)
    cpu: float = 0.0  # share of one core over the run's sampling window


def pipeline_processes(pipe: Pipeline) -> dict[str, int]:
    """label → pid of the supervisor and each stage process."""
    return {"supervisor": pipe.pid, **children_of(pipe.pid)}


def cpu_seconds_of(pids: dict[str, int]) -> dict[str, float]:
    """User and system CPU seconds each process has used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for label, pid in pids.items():
        raw = Path(f"/proc/{pid}/stat").read_bytes()
        fields = raw[raw.rfind(b")") + 2 :].split()
        out[label] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime (14, 15)
    return out


def pipeline_memory(pipe: Pipeline, cpu: dict[str, float] | None = None) -> list[StageMemory]:
    """RSS and PSS (smaps_rollup) of the supervisor and each stage process, with ``cpu``
    (label → share of a core) where given."""
    procs = pipeline_processes(pipe)
    return [
        replace(_memory(label, pid), cpu=(cpu or {}).get(label, 0.0))
        for label, pid in sorted(procs.items())
    ]


def _memory(label: str, pid: int) -> StageMemory:
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        fields[key] = int(rest.split()[0]) * 1024
    stat_fds = 0
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        stat_fds += target.startswith("/proc/") and target.endswith("/stat")
    return StageMemory(label, fields["Rss"], fields["Pss"], stat_fds)
