"""The node's HTTP endpoint, as the supervisor serves it: ``/metrics`` (the stages' metrics
and the supervisor's own) and ``/healthz`` (every stage up, rounds completing, no stage
stalled; ``pipeline.health``, ``pipeline.liveness``), and ``metrics.addr`` in the run
directory, which says where it listens (the port may have been chosen by the kernel).
The server, which no client can hold up, is ``pipeline.httpserve``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, generate_latest

from pipeline import liveness
from pipeline.children import Child
from pipeline.config import ConfigError
from pipeline.configschema import Config
from pipeline.configvalues import parse_addr
from pipeline.health import health_check
from pipeline.httpserve import DroppedCollector, HttpServer
from pipeline.rundir import RunDir

# The supervisor's: it is the supervisor that serves the endpoint.
log = logging.getLogger("procsmith.supervisor")


def open_endpoint(
    config: Config,
    metrics_addr: str,
    children: Sequence[Child],
    started: float,
    registry: CollectorRegistry,
) -> HttpServer:
    """Serve ``registry`` and the node's health on ``metrics_addr`` (the supervisor started
    ``children`` at ``started``); raises ConfigError when the address cannot be served."""
    base = health_check(children, config, started, registry)
    sup = config.supervisor

    def health() -> tuple[bool, list[str]]:
        _, problems = base()
        reading = liveness.read(registry)
        stalls = liveness.stalled(children, reading, time.time(), sup.stall_timeout)
        problems += liveness.problems(reading, stalls, sup.stall_timeout, sup.shard_missing_rounds)
        return (not problems, problems)

    def answer(path: str) -> tuple[int, bytes, str]:
        if path == "/metrics":
            return 200, generate_latest(registry), "text/plain; version=0.0.4"
        if path in ("/healthz", "/health"):
            ok, problems = health()
            return (
                (200, b"ok\n", "text/plain")
                if ok
                else (
                    503,
                    "".join(p + "\n" for p in problems).encode(),
                    "text/plain",
                )
            )
        return 404, b"not found: try /metrics or /healthz\n", "text/plain"

    try:
        server = HttpServer(
            parse_addr(metrics_addr),
            answer,
            timeout=sup.http_timeout,
            max_connections=sup.http_max_connections,
        )
    except OSError as err:
        raise ConfigError(f"cannot serve metrics on {metrics_addr}: {err.strerror}") from None
    registry.register(DroppedCollector(server))
    host, port = server.server_address
    log.info("metrics and health on http://%s:%d/metrics and /healthz", host, port)
    return server


def write_address(rundir: RunDir, server: HttpServer) -> None:
    """Where ``server`` listens, as ``HOST:PORT`` in ``metrics.addr`` of the run directory."""
    host, port = server.server_address
    # Written aside, then renamed: a reader never sees the file empty.
    at = rundir.fd
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open("metrics.addr.new", flags, 0o644, dir_fd=at)
    try:
        os.write(fd, f"{host}:{port}\n".encode())
    finally:
        os.close(fd)
    os.rename("metrics.addr.new", "metrics.addr", src_dir_fd=at, dst_dir_fd=at)
