"""Prometheus metrics: the Meter stage processes count through, and the node's endpoint.

Under ``procsmith run`` every stage process writes its values to files in
``$PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode) and the supervisor
serves them all, summed, on one port. The supervisor turns that mode on with
``enable_multiprocess`` before it forks the first stage.
"""

from __future__ import annotations

import glob
import http.server
import logging
import os
import struct
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
    values,
)
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from pipeline.configvalues import parse_addr
from stages.base.catalog import CATALOG
from stages.base.meter import check_labels

log = logging.getLogger("procsmith.metrics")

_Metric = Counter | Gauge | Histogram


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def enable_multiprocess(directory: str) -> None:
    """From now on every metric this process (or a child forked from it) creates writes its
    values to a file of its own in ``directory``, where the supervisor reads them all.

    prometheus-client chooses this mode only by looking at an environment variable when it
    is first imported; setting its value class here instead means the order of imports does
    not matter. The variable is set too: each value reads it to find its directory.
    """
    os.environ[MULTIPROC_ENV] = directory
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


class PromMeter:
    """A Meter whose metrics are created on first use, in the process that uses them."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._metrics: dict[str, _Metric] = {}

    def _get(self, name: str, labels: dict[str, str]) -> Any:
        metric = self._metrics.get(name)
        if metric is None:
            # Checked once, here: after this, prometheus-client itself refuses wrong label
            # names on every use, so the hot path (a count per record) does not check twice.
            check_labels(name, labels)
            spec = CATALOG[name]
            if spec.type == "counter":
                metric = Counter(
                    name.removesuffix("_total"), spec.help, spec.labels, registry=self.registry
                )
            elif spec.type == "gauge":
                metric = Gauge(
                    name,
                    spec.help,
                    spec.labels,
                    registry=self.registry,
                    multiprocess_mode=spec.mode,  # type: ignore[arg-type]
                )
            else:
                metric = Histogram(name, spec.help, spec.labels, registry=self.registry)
            self._metrics[name] = metric
        return metric.labels(**labels) if labels else metric

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        self._get(name, labels).inc(amount)

    def set(self, name: str, value: float, **labels: str) -> None:
        self._get(name, labels).set(value)

    def observe(self, name: str, value: float, **labels: str) -> None:
        self._get(name, labels).observe(value)


class StageFilesCollector(MultiProcessCollector):
    """prometheus-client's multiprocess collector, minus the files it cannot read yet.

    A stage process that has just started creates its metrics file empty and sizes it a
    moment later; read in between, the whole scrape would fail. Such a file is left for the
    next scrape.
    """

    def collect(self) -> Any:
        files = []
        for path in glob.glob(os.path.join(self._path, "*.db")):
            try:
                list(MmapedDict.read_all_values_from_file(path))  # type: ignore[no-untyped-call]
            except (OSError, struct.error, RuntimeError, ValueError):
                continue
            files.append(path)
        return self.merge(files, accumulate=True)  # type: ignore[no-untyped-call]


def node_registry(multiproc_dir: str, *extra: Collector) -> CollectorRegistry:
    """Every stage process's metrics, combined, plus the supervisor's own collectors."""
    registry = CollectorRegistry(auto_describe=False)
    StageFilesCollector(registry, path=multiproc_dir)  # type: ignore[no-untyped-call]
    for collector in extra:
        registry.register(collector)
    return registry


def mark_process_dead(multiproc_dir: str, pid: int) -> None:
    """Forget a dead process's live gauges (its counters keep counting in the totals)."""
    multiprocess.mark_process_dead(pid, path=multiproc_dir)  # type: ignore[no-untyped-call]


def sample_value(registry: CollectorRegistry, name: str) -> float | None:
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return None


HealthCheck = Callable[[], tuple[bool, list[str]]]


def handler_class(
    registry: CollectorRegistry, health: HealthCheck
) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        timeout = 2.0  # a client that does not send its request in time is dropped
        server_version = "procsmith"

        def do_GET(self) -> None:
            try:
                self._get()
            except Exception as err:
                log.exception("serving %s failed", self.path)
                self._send(500, f"error: {err}\n".encode(), "text/plain")

        def _get(self) -> None:
            if self.path.split("?")[0] == "/metrics":
                self._send(200, generate_latest(registry), "text/plain; version=0.0.4")
            elif self.path.split("?")[0] in ("/healthz", "/health"):
                ok, problems = health()
                body = ("ok\n" if ok else "".join(p + "\n" for p in problems)).encode()
                self._send(200 if ok else 503, body, "text/plain")
            else:
                self._send(404, b"not found: try /metrics or /healthz\n", "text/plain")

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # scrapes every few seconds are not news

    return Handler


def serve_in_thread(addr: str, registry: CollectorRegistry) -> None:
    """A single stage run on its own (``procsmith stage --metrics-addr``) serves itself."""
    host, port = parse_addr(addr)
    start_http_server(port, host, registry=registry)
