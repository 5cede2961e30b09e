"""``procsmith run``: every stage of the pipeline as a child process of this one.

The supervisor is single-threaded: one ``select`` loop over the signal pipe and the metrics
socket. Children are forked after the heavy modules are imported, so they share those pages,
and they never unwind back into this code. A dead child is restarted after a back-off that
doubles with each recent crash; ``supervisor.crash_limit`` crashes within
``supervisor.crash_window`` is a crash loop, and the supervisor stops everything and exits 1.
On SIGTERM/SIGINT it stops the stages producers-first, so each can drain what its upstream
sent, and kills whatever is left when ``supervisor.stop_timeout`` runs out.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.server
import logging
import os
import selectors
import shutil
import signal
import time

from pipeline.children import Child
from pipeline.config import Config, ConfigError, parse_addr
from pipeline.health import NodeCollector, health_check, summary_counts, summary_line
from pipeline.metrics import enable_multiprocess, handler_class, mark_process_dead, node_registry
from pipeline.preflight import Prepared, preflight
from pipeline.runner import run_stage
from pipeline.signals import SignalInbox
from pipeline.tap import run_taphub
from pipeline.transport import Endpoints
from pipeline.wiring import START_ORDER, STOP_ORDER, TAPHUB, binders, replicas
from stages.base import exitcodes

log = logging.getLogger("procsmith.supervisor")

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15


class CrashLoop(Exception):
    pass


class Supervisor:
    def __init__(self, config: Config, metrics_addr: str | None = None) -> None:
        self.config = config
        self.metrics_addr = metrics_addr or config.supervisor.metrics_addr
        self.run_dir = Endpoints(config.transport, binders()).run_dir
        self.metrics_dir = self.run_dir / "metrics"
        self.children = [Child(TAPHUB, 0, 1)] + [
            Child(name, k, replicas(name, config))
            for name in START_ORDER
            for k in range(replicas(name, config))
        ]
        self.started = time.time()
        self.stopping = False
        self.prepared: Prepared | None = None

    # -- start-up -------------------------------------------------------------------------

    def prepare(self) -> None:
        """Preflight checks (the signatures compiled once, before any fork, so every match
        process shares them), the run and metrics directories, multiprocess metrics.
        Raises ConfigError on what the checks refuse."""
        self.prepared = preflight(self.config, {c.name for c in self.children})
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        self.metrics_dir.mkdir(mode=0o700)
        enable_multiprocess(str(self.metrics_dir))

    def serve(self) -> http.server.HTTPServer:
        self.registry = node_registry(str(self.metrics_dir), NodeCollector(self.children))
        check = health_check(self.children, self.config, self.started, self.registry)
        try:
            server = http.server.HTTPServer(
                parse_addr(self.metrics_addr), handler_class(self.registry, check)
            )
        except OSError as err:
            raise ConfigError(
                f"cannot serve metrics on {self.metrics_addr}: {err.strerror}"
            ) from None
        host, port = str(server.server_address[0]), int(server.server_address[1])
        log.info("metrics and health on http://%s:%d/metrics and /healthz", host, port)
        # Written aside, then renamed: a reader never sees the file empty.
        pending = self.run_dir / "metrics.addr.new"
        pending.write_text(f"{host}:{port}\n")
        pending.rename(self.run_dir / "metrics.addr")
        return server

    # -- children -------------------------------------------------------------------------

    def spawn(self, child: Child, close_fds: list[int]) -> None:
        pid = os.fork()
        if pid:
            child.pid, child.started = pid, time.time()
            log.info("started %s (pid %d)", child.label, pid)
            return
        code = exitcodes.FAILURE
        try:
            code = self._child_main(child, close_fds)
        except BaseException:
            log.exception("%s failed", child.label)
        finally:
            logging.shutdown()
            os._exit(code)

    def _child_main(self, child: Child, close_fds: list[int]) -> int:
        parent = os.getppid()
        # If the supervisor dies (even by SIGKILL), the kernel sends the child SIGTERM.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        # `ps -o comm`, `top` and our own scanner see which stage this is.
        libc.prctl(_PR_SET_NAME, f"ps:{child.label}".encode()[:15])
        if os.getppid() != parent:
            return exitcodes.FAILURE
        for fd in close_fds:
            os.close(fd)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        # Ctrl-C reaches the whole process group; only the supervisor acts on it, and stops
        # the children in order with SIGTERM.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        inbox = SignalInbox((signal.SIGTERM,))
        if child.name == TAPHUB:
            return run_taphub(self.config, inbox)
        return run_stage(
            child.name,
            self.config,
            child.index,
            child.count,
            inbox=inbox,
            prepared=self.prepared,
            restarted=child.restarts > 0,
        )

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
        sel.register(server.socket, selectors.EVENT_READ)
        inherited = [inbox.fd, server.socket.fileno()]
        code = exitcodes.OK
        summary = _Summary(self.config.supervisor.summary_interval)
        try:
            while True:
                now = time.time()
                if summary.due(now):
                    log.info("%s", summary.line(now, summary_counts(self.registry)))
                for child in self.children:
                    if child.pid is None and child.due <= now:
                        if child.started:
                            child.restarts += 1
                        self.spawn(child, inherited)
                waiting = [c.due for c in self.children if c.pid is None]
                timeout = max(0.0, min(waiting) - time.time()) if waiting else 1.0
                for key, _ in sel.select(min(timeout, 1.0)):
                    if key.fileobj is server.socket:
                        server.handle_request()
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
            server.server_close()
            inbox.close()
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
        return code

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
