"""Real procsmith processes for integration tests: the supervised pipeline, stages started
alone, and the tap, each a subprocess; metrics read from the real endpoint."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from stages.procfs import list_pids, read_stat
from stages.statline import parse_stat

TAPHUB_LABEL = "taphub/0"  # how the tap hub process is named among the supervisor's children

# Fast rounds for tests; every test can override any key.
FAST = {
    "PROCSMITH_SCAN__INTERVAL": "200ms",
    "PROCSMITH_TREE__GRACE": "150ms",
    "PROCSMITH_SUPERVISOR__BACKOFF_INITIAL": "100ms",
    "PROCSMITH_SUPERVISOR__BACKOFF_MAX": "1s",
}


def wait_until(
    what: str, cond: Callable[[], Any], timeout: float = 60.0, log: Path | None = None
) -> Any:
    """Poll ``cond`` until it returns something truthy; fail naming ``what`` (and the log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = cond()
        if result:
            return result
        time.sleep(0.05)
    tail = "" if log is None or not log.exists() else log.read_text()[-3000:]
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}\n{tail}")


_short_parent: list[Path] = []


def short_run_dir() -> Path:
    """A fresh directory with a short path (Unix socket paths are limited to 107 bytes, and
    pytest's tmp_path is too deep). All of them go when this process exits."""
    if not _short_parent:
        _short_parent.append(Path(tempfile.mkdtemp(prefix="ps-", dir="/tmp")))
        atexit.register(shutil.rmtree, _short_parent[0], ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=_short_parent[0]))


def free_base_port(endpoints: int = 7) -> int:
    """A tcp base port whose endpoint ports (base+1 … base+``endpoints``; pass
    ``len(pipeline.transport.PORT_OFFSET)``) are all free on 127.0.0.1 now."""
    for base in range(24000, 60000, 97):
        socks: list[socket.socket] = []
        try:
            for offset in range(1, endpoints + 1):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise RuntimeError("no free range of ports")


def procsmith(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", *args]


def run_procsmith(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``procsmith ARGS…`` run to its end, its output captured as text."""
    return subprocess.run(
        procsmith(*args), capture_output=True, text=True, check=False, timeout=timeout
    )


def stat_of(pid: int) -> tuple[int, str] | None:
    """(ppid, comm) of a live process, read straight from procfs."""
    try:
        stat = parse_stat(read_stat(f"/proc/{pid}/stat"))
    except OSError:
        return None
    return None if stat is None else (stat.ppid, stat.comm)


def children_of(parent: int) -> dict[str, int]:
    """The supervisor's children by stage label (their comm is ``ps:<stage>/<k>``)."""
    found = {}
    for pid in list_pids("/proc"):
        if (st := stat_of(pid)) and st[0] == parent:
            found[st[1].removeprefix("ps:")] = pid
    return found


def resident_kib(pid: int | str, library: str) -> int:
    """KiB of ``library``'s read-only mappings (code, constants) resident in process ``pid``
    (``"self"``: this one), from its smaps."""
    total, inside = 0, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5:
            inside = len(head) == 6 and head[1] in ("r-xp", "r--p") and head[5] == library
        elif inside and head[0] == "Rss:":
            total += int(head[1])
    return total


class Metrics:
    def __init__(self, text: str) -> None:
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value

    def get(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str) -> float:
        """The sum of ``name`` over all its label sets."""
        return sum(v for (n, _), v in self.samples.items() if n == name)

    def has(self, name: str) -> bool:
        return any(n == name for n, _ in self.samples)


class Pipeline:
    """``procsmith run`` on ``proc_root``; use as a context manager. Leaving checks that it
    stops on SIGTERM with exit code 0 and leaves no child behind."""

    def __init__(
        self,
        proc_root: Path | str,
        env: Mapping[str, str] | None = None,
        prefix: Sequence[str] = (),
        *,
        run_dir: Path | None = None,
        program: Sequence[str] = (),
        cwd: Path | None = None,
    ) -> None:
        self.proc_root = str(proc_root)
        self.prefix = list(prefix)  # e.g. tests.privileges.without_file_capabilities()
        # How procsmith is run: this interpreter's `-m pipeline.cli` unless told otherwise
        # (an installed `procsmith` script, say), from ``cwd``.
        self.program = list(program) or procsmith()
        self.cwd = cwd
        self.run_dir = run_dir or short_run_dir()  # procsmith creates it if it is missing
        files = short_run_dir()
        self.log = files / "log"
        self.out = files / "stdout"
        self.env = {
            **os.environ,
            **FAST,
            "PROCSMITH_TRANSPORT__RUN_DIR": str(self.run_dir),
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.child_pids: set[int] = set()

    def start(self) -> Pipeline:
        with self.log.open("wb") as err, self.out.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    *self.prefix,
                    *self.program,
                    *("run", "--proc-root", self.proc_root, "--metrics-addr", "127.0.0.1:0"),
                ],
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=err,
            )
        addr = self.run_dir / "metrics.addr"
        try:
            wait_until(
                "the metrics endpoint",
                lambda: addr.exists() or self.proc.poll() is not None,  # type: ignore[union-attr]
                log=self.log,
            )
            if not addr.exists():
                raise AssertionError(f"procsmith run exited: {self.log.read_text()[-3000:]}")
        except BaseException:
            # __exit__ does not run when __enter__ fails: stop what was started here.
            self.proc.kill()
            self.proc.wait()
            raise
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None  # noqa: S101 - started by start()
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"http://{(self.run_dir / 'metrics.addr').read_text().strip()}{path}"

    def metrics(self) -> Metrics:
        with urllib.request.urlopen(self.url("/metrics"), timeout=10) as r:  # noqa: S310
            return Metrics(r.read().decode())

    def health(self) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url("/healthz"), timeout=10) as r:  # noqa: S310
                return r.status, r.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def children(self) -> dict[str, int]:
        kids = children_of(self.pid)
        self.child_pids |= set(kids.values())
        return kids

    def wait_flowing(self, rounds: int = 2) -> None:
        """Until rounds complete: every stage is up, bound and connected."""
        wait_until(
            f"{rounds} rounds",
            lambda: self.metrics().get("procsmith_rounds_total") >= rounds,
            log=self.log,
        )

    def child(self, label: str) -> int:
        """The pid of one stage process, waiting for it (a fresh child names itself)."""
        pid: int = wait_until(f"{label} to run", lambda: self.children().get(label), log=self.log)
        return pid

    def stop(self, signum: int = signal.SIGTERM) -> int:
        assert self.proc is not None  # noqa: S101 - started by start()
        self.children()
        self.proc.send_signal(signum)
        code = self.proc.wait(30)
        return code

    def __enter__(self) -> Pipeline:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        code = self.stop()
        if exc[0] is None:
            if code != 0:
                raise AssertionError(f"exit code {code}: {self.log.read_text()[-3000:]}")
            left = [p for p in self.child_pids if stat_of(p) is not None]
            if left:
                raise AssertionError(f"children left behind: {left}")


class Tap:
    """``procsmith tap STAGE…`` collecting what it prints, in a thread."""

    def __init__(self, env: Mapping[str, str], stages: Sequence[str] = ()) -> None:
        self.records: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            procsmith("tap", *stages), env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert self.proc.stdout is not None  # noqa: S101 - stdout=PIPE
        self._thread = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        for line in stream:
            if not line.endswith(b"\n"):
                return  # the tap was stopped mid-line: what it did not finish is not a record
            with self._lock:
                self.records.append(orjson.loads(line))

    def of(self, stage: str, kind: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.records if r["stage"] == stage and kind in (None, r["type"])]

    def judged(self, stage: str = "match") -> dict[int, dict[str, Any]]:
        """pid → process record, of every process ``stage`` has acknowledged (match a clean
        one, enforce one with a finding)."""
        return {
            r["record"]["process"]["pid"]: r["record"]["process"] for r in self.of(stage, "judged")
        }

    def close(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._thread.join(5)

    def __enter__(self) -> Tap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def tapping(pipeline: Pipeline, *stages: str) -> Iterator[Tap]:
    """A tap that is known to be connected: it has seen classify's per-round record."""
    with Tap(pipeline.env, (*stages, "classify")) as tap:
        wait_until("the tap to connect", lambda: tap.of("classify"), log=pipeline.log)
        yield tap
