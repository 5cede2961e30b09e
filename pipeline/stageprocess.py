"""One stage process from its config to its exit code.

It prepares what the stage needs (the supervisor's preflight, or its own when run alone), its
meter and metrics endpoint, the stage's logic (``pipeline.builders``), one ZeroMQ Context
created here, after the fork, and the ZAP handler before any socket binds; then runs the
loop (``pipeline.runner``) until a stop signal, and closes everything it opened in reverse.
"""

from __future__ import annotations

import logging
import os

import zmq

from pipeline.builders import build_stage
from pipeline.configschema import Config
from pipeline.memory import return_freed_memory
from pipeline.metrics import PromMeter, serve_in_thread
from pipeline.preflight import Prepared, preflight
from pipeline.runner import StageLoop
from pipeline.signals import SignalInbox
from pipeline.transport import Endpoints
from pipeline.wiring import WIRING, binders, replicas
from stages.base import exitcodes

log = logging.getLogger("procsmith.runner")


def run_stage(
    name: str,
    config: Config,
    index: int = 0,
    count: int | None = None,
    *,
    metrics_addr: str | None = None,
    inbox: SignalInbox | None = None,
    prepared: Prepared | None = None,
    restarted: bool | None = None,
) -> int:
    """Run one stage process until SIGTERM/SIGINT; returns its exit code.

    ``prepared`` comes from the supervisor's preflight; a stage run alone does its own.
    ``restarted``: whether the supervisor started this stage before (``None``: not known).
    """
    wiring = WIRING[name]
    return_freed_memory()
    if prepared is None:
        prepared = preflight(config, [name])
    count = count if count is not None else replicas(name, config)
    inbox = inbox if inbox is not None else SignalInbox()
    meter = PromMeter()
    if metrics_addr:
        serve_in_thread(metrics_addr, meter.registry)
    stage = build_stage(
        name,
        config,
        meter,
        index=index,
        count=count,
        signatures=prepared.signatures,
        restarted=restarted,
    )
    security = prepared.security.for_role(name)
    endpoints = Endpoints(config.transport, binders(), security=security, role=name)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    zap = None
    loop = None
    try:
        # Before any socket binds: the ZAP handler decides every CURVE handshake of ctx.
        zap = security.authenticator(ctx)
        loop = StageLoop(
            wiring,
            instance=index,
            stage=stage,
            meter=meter,
            ctx=ctx,
            endpoints=endpoints,
            config=config,
        )
        log.info("%s %d/%d running (pid %d)", name, index, count, os.getpid())
        loop.run(inbox)
    finally:
        if loop is not None:
            loop.close()
        if zap is not None:
            zap.stop()
        if loop is None:
            ctx.destroy(linger=0)  # what a StageLoop that failed to start had opened
        else:
            ctx.term()
        endpoints.close()  # last: no socket addressed through the run directory is left
    failure = stage.failure()
    if failure is not None:
        log.error("%s %d/%d stopped: %s", name, index, count, failure)
        return exitcodes.FAILURE
    log.info("%s %d/%d stopped", name, index, count)
    return exitcodes.OK
