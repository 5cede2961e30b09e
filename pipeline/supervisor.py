"""``procsmith run``: every stage of the pipeline as a child process of this one.

The supervisor is single-threaded: one ``select`` loop over the signal pipe and the metrics
server's sockets (non-blocking, see ``pipeline.httpserve``: no client can hold it up). It
holds the run directory's lock while it runs (``pipeline.lock``), clears stages a killed
predecessor left (``pipeline.leftovers``), and kills and restarts a stage whose heartbeat
stops (``pipeline.liveness``, ``supervisor.restart_stalled``).

Children are forked after the heavy modules are imported, so they share those pages (no
garbage collector touches what they inherit: ``gc.freeze``; the signature compiler's code
is let go first, ``pipeline.memory``), and they never unwind back into this code
(``pipeline.stagefork``). A dead child is restarted after a back-off that doubles with each
recent crash; ``supervisor.crash_limit`` crashes within ``supervisor.crash_window`` is a
crash loop, and the supervisor stops everything and exits 1.
On SIGTERM/SIGINT it stops the stages producers-first, so each can drain what its upstream
sent, and kills whatever is left when ``supervisor.stop_timeout`` runs out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import shutil
import signal
import time
from pathlib import Path

from pipeline import leftovers, liveness
from pipeline.children import Child
from pipeline.config import ConfigError
from pipeline.configschema import Config
from pipeline.health import NodeCollector, summary_counts, summary_line
from pipeline.httpserve import HttpServer
from pipeline.lock import RunDirLock
from pipeline.metrics import enable_multiprocess, mark_process_dead, node_registry
from pipeline.nodeendpoint import open_endpoint, write_address
from pipeline.preflight import Prepared, preflight
from pipeline.rundir import RunDir, RunDirError, open_private_dir
from pipeline.signals import SignalInbox
from pipeline.stagefork import fork_stage, shed_before_first_fork
from pipeline.transport import run_dir_of
from pipeline.wiring import START_ORDER, STOP_ORDER, TAPHUB, replicas
from stages.base import exitcodes

log = logging.getLogger("procsmith.supervisor")

STALL_CHECK_EVERY = 1.0  # seconds between two looks at the stages' heartbeats


class CrashLoop(Exception):
    pass


class Supervisor:
    def __init__(self, config: Config, metrics_addr: str | None = None) -> None:
        self.config = config
        self.metrics_addr = metrics_addr or config.supervisor.metrics_addr
        self.run_dir = run_dir_of(config.transport)
        self.metrics_dir = self.run_dir / "metrics"
        self.rundir: RunDir | None = None  # the run directory, opened and checked
        self.children = [Child(TAPHUB, 0, 1)] + [
            Child(name, k, replicas(name, config))
            for name in START_ORDER
            for k in range(replicas(name, config))
        ]
        self.started = time.time()
        self.stopping = False
        self.prepared: Prepared | None = None
        self.lock: RunDirLock | None = None
        self.failed_at_stop: list[str] = []  # stages that exited non-zero when stopped

    # -- start-up -------------------------------------------------------------------------

    def prepare(self) -> None:
        """Preflight checks (the signatures compiled once, before any fork, so every match
        process shares them), the run and metrics directories, multiprocess metrics.
        Raises ConfigError on what the checks refuse, or when another supervisor holds the
        run directory (checked before anything in it is touched)."""
        try:  # tcp too: the lock and the metrics live there
            self.rundir = open_private_dir(self.run_dir)
        except RunDirError as err:
            raise ConfigError(f"transport.run_dir: {err}") from None
        # Everything below goes through the directory's descriptor, the lock and the metrics
        # directory too (forked stages inherit the descriptor, so the path names it for them
        # as well).
        self.lock = RunDirLock(self.via_fd)
        (self.via_fd / "metrics.addr").unlink(missing_ok=True)  # a killed predecessor's
        cleared = leftovers.clear(self.via_fd)
        if cleared:
            log.warning("killed %d stage processes a previous run left: %s", len(cleared), cleared)
        self.prepared = preflight(self.config, {c.name for c in self.children})
        shutil.rmtree("metrics", ignore_errors=True, dir_fd=self.rundir.fd)
        os.mkdir("metrics", 0o700, dir_fd=self.rundir.fd)
        self.metrics_dir = Path(self.rundir.socket_path("metrics"))
        enable_multiprocess(str(self.metrics_dir))

    @property
    def via_fd(self) -> Path:
        """The run directory as reached through its checked descriptor."""
        assert self.rundir is not None  # noqa: S101 - prepare() opened it
        return Path(f"/proc/self/fd/{self.rundir.fd}")

    def serve(self) -> HttpServer:
        self.registry = node_registry(str(self.metrics_dir), NodeCollector(self.children))
        server = open_endpoint(
            self.config, self.metrics_addr, self.children, self.started, self.registry
        )
        assert self.rundir is not None  # noqa: S101 - prepare() opened it
        write_address(self.rundir, server)
        return server

    # -- children -------------------------------------------------------------------------

    def spawn(self, child: Child, close_fds: list[int]) -> None:
        if not any(c.pid is not None for c in self.children):
            shed_before_first_fork(self.prepared)
        pid = fork_stage(child, self.config, self.prepared, close_fds)
        child.pid, child.started = pid, time.time()
        log.info("started %s (pid %d)", child.label, pid)
        leftovers.record(self.via_fd, [c.pid for c in self.children if c.pid is not None])

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = next((c for c in self.children if c.pid == pid), None)
            mark_process_dead(str(self.metrics_dir), pid)
            if child is None:
                continue
            child.pid = None
            how = _describe(status)
            if self.stopping:
                log.info("%s stopped (%s)", child.label, how)
                if os.WIFEXITED(status) and os.WEXITSTATUS(status) != exitcodes.OK:
                    self.failed_at_stop.append(child.label)
                continue
            now = time.time()
            child.crashes.append(now)
            while child.crashes and child.crashes[0] < now - self.config.supervisor.crash_window:
                child.crashes.popleft()
            if len(child.crashes) >= self.config.supervisor.crash_limit:
                raise CrashLoop(
                    f"{child.label} died {len(child.crashes)} times within "
                    f"{self.config.supervisor.crash_window:g}s (last: {how}); giving up"
                )
            s = self.config.supervisor
            delay = min(s.backoff_max, s.backoff_initial * 2 ** (len(child.crashes) - 1))
            child.due = now + delay
            log.warning("%s died (%s); restarting in %.1fs", child.label, how, delay)

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> int:
        self.prepare()
        server = self.serve()
        inbox = SignalInbox((signal.SIGTERM, signal.SIGINT, signal.SIGCHLD))
        sel = selectors.DefaultSelector()
        sel.register(inbox.fd, selectors.EVENT_READ)
        sel.register(server.fileno(), selectors.EVENT_READ)
        code = exitcodes.OK
        summary = _Summary(self.config.supervisor.summary_interval)
        next_stall_check = time.time() + STALL_CHECK_EVERY
        try:
            while True:
                now = time.time()
                if summary.due(now):
                    log.info("%s", summary.line(now, summary_counts(self.registry)))
                if now >= next_stall_check:
                    self.check_stalls(now)
                    next_stall_check = now + STALL_CHECK_EVERY
                for child in self.children:
                    if child.pid is None and child.due <= now:
                        if child.started:
                            child.restarts += 1
                        self.spawn(child, self._inherited(inbox, server))
                wakes = [c.due for c in self.children if c.pid is None] + [next_stall_check]
                timeout = max(0.0, min(wakes) - time.time())
                http_due = server.next_deadline()
                if http_due is not None:
                    timeout = min(timeout, max(0.0, http_due - time.monotonic()))
                sel.select(min(timeout, 1.0))
                server.serve()  # whatever is ready, never waiting; drops expired clients
                got = inbox.take()
                self.reap()
                if signal.SIGTERM in got or signal.SIGINT in got:
                    log.info("stopping on %s", signal.Signals(got[-1]).name)
                    break
        except CrashLoop as err:
            log.error("crash loop: %s", err)
            code = exitcodes.FAILURE
        finally:
            self.stop()
            sel.close()
            server.close()
            inbox.close()
            self._release()
        if self.failed_at_stop:
            log.error("stages that failed as they stopped: %s", ", ".join(self.failed_at_stop))
            code = exitcodes.FAILURE
        return code

    def _release(self) -> None:
        """What the run directory holds of this run: metrics, the pid list, the lock —
        given up last, the directory's descriptor last of all."""
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        if self.rundir is not None:
            (self.via_fd / leftovers.PIDS_FILE).unlink(missing_ok=True)
        if self.lock is not None:
            self.lock.release()
        if self.rundir is not None:
            self.rundir.close()

    def _inherited(self, inbox: SignalInbox, server: HttpServer) -> list[int]:
        """The supervisor's descriptors a child closes: it must not hold the lock, or keep
        an HTTP client's connection open after the supervisor has answered it."""
        fds = [inbox.fd, *server.fds()]
        if self.lock is not None:
            fds.append(self.lock.fd)
        return fds

    def check_stalls(self, now: float) -> None:
        """Count each stage process found making no progress (once per process) and, with
        ``supervisor.restart_stalled``, kill it: reap() then restarts it like a crash."""
        sup = self.config.supervisor
        reading = liveness.read(self.registry)
        for child, age in liveness.stalled(self.children, reading, now, sup.stall_timeout):
            if child.stalled_pid == child.pid:
                continue
            child.stalled_pid = child.pid
            child.stalls += 1
            if sup.restart_stalled:
                log.warning("%s made no progress for %.0fs; restarting it", child.label, age)
                _signal(child.pid, signal.SIGKILL)
            else:
                log.warning("%s made no progress for %.0fs", child.label, age)

    def stop(self) -> None:
        """SIGTERM producers first, wave by wave; SIGKILL what outlives the timeout."""
        self.stopping = True
        deadline = time.monotonic() + self.config.supervisor.stop_timeout
        for wave in (*STOP_ORDER, TAPHUB):
            members = [c for c in self.children if c.name == wave and c.pid is not None]
            for c in members:
                _signal(c.pid, signal.SIGTERM)
            while any(c.pid is not None for c in members) and time.monotonic() < deadline:
                time.sleep(0.01)
                self.reap()
        for c in self.children:
            if c.pid is not None:
                log.warning("%s did not stop in time; killing it", c.label)
                _signal(c.pid, signal.SIGKILL)
        while any(c.pid is not None for c in self.children):
            self.reap()
            time.sleep(0.01)


class _Summary:
    """When the next summary line is due, and the counts of the last one."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last = time.time()
        self.before: dict[str, float] = {}

    def due(self, now: float) -> bool:
        return self.interval > 0 and now - self.last >= self.interval

    def line(self, now: float, counts: dict[str, float]) -> str:
        text = summary_line(counts, self.before, (now - self.last) / 60)
        self.last, self.before = now, counts
        return text


def _signal(pid: int | None, signum: int) -> None:
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):  # already gone; reap() will hear of it
            os.kill(pid, signum)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
