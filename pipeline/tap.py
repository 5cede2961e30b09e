"""The debugging tap: every stage PUBlishes what it emits to the tap hub; ``procsmith tap``
subscribes there.

The hub is an XSUB/XPUB proxy (the ZeroMQ guide's pattern): stages connect a publisher to its
XSUB, any number of ``procsmith tap`` clients connect a SUB to its XPUB, and subscriptions
travel upstream, so a stage publishes only topics somebody is watching — with no tap client
a stage sends nothing. Topics are ``<stage>/<instance>``. PUB and XPUB drop for a subscriber
that does not keep up; nothing on the tap path ever blocks a stage. Over tcp with keys the
hub's XSUB admits only the stages' keys and its XPUB only the ``tap`` role's: a client without
that key gets nothing, a publisher without a stage's key gets nothing in (pipeline/security.py).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Sequence
from typing import BinaryIO

import msgspec
import zmq

from pipeline.config import ConfigError
from pipeline.configschema import Config
from pipeline.metrics import PromMeter
from pipeline.peers import PeerWatch
from pipeline.rundir import RunDirError
from pipeline.security import TAP_CLIENT, Security, load_security
from pipeline.signals import STOP_SIGNALS, SignalInbox
from pipeline.transport import Codec, Endpoints
from pipeline.wiring import STAGE_NAMES, TAPHUB, binders
from stages.base import exitcodes
from stages.base.catalog import TRANSPORT_INSECURE
from stages.base.render import tap_line

log = logging.getLogger("procsmith.tap")
# A subscription the hub holds for itself, to a topic no stage publishes: every publisher
# that connects is sent it with the tap clients' subscriptions, which tells a starting stage
# that those have arrived (pipeline.runner waits for it).
HUB_PRIMER = b"\x01\x00procsmith-hub"


def run_taphub(
    config: Config, inbox: SignalInbox | None = None, security: Security | None = None
) -> int:
    """The hub, until SIGTERM/SIGINT. Its callers have run the preflight checks (the run
    directory, the keys) and pass the ``security`` it gave."""
    inbox = inbox if inbox is not None else SignalInbox()
    security = (security or Security()).for_role(TAPHUB)
    meter = PromMeter()
    meter.set(TRANSPORT_INSECURE, 1 if security.insecure else 0, stage=TAPHUB)
    endpoints = Endpoints(config.transport, binders(), security=security, role=TAPHUB)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    # tap-in admits only the stages' keys, tap-out only the tap client's.
    zap = security.authenticator(ctx)
    sockets: list[zmq.Socket[bytes]] = []
    watches: list[PeerWatch] = []
    try:
        for kind, name in ((zmq.XSUB, "tap-in"), (zmq.XPUB, "tap-out")):
            sock = endpoints.open(ctx, kind, name, bind=True)
            sockets.append(sock)
            if endpoints.curve:
                watches.append(
                    PeerWatch(
                        sock, meter, stage=TAPHUB, endpoint=name, disconnects=False, refusals=True
                    )
                )
        _proxy(sockets[0], sockets[1], inbox, watches)
    finally:
        for watch in watches:
            watch.close()
        for sock in sockets:
            sock.close()
        if zap is not None:
            zap.stop()
        ctx.term()
        endpoints.close()
    return exitcodes.OK


def _proxy(
    front: zmq.Socket[bytes],
    back: zmq.Socket[bytes],
    inbox: SignalInbox,
    watches: Sequence[PeerWatch],
) -> None:
    """Forward between the hub's two sockets until a stop signal; count refused peers."""
    front.send(HUB_PRIMER)
    poller = zmq.Poller()
    for item in (front, back, inbox.fd, *(w.monitor for w in watches)):
        poller.register(item, zmq.POLLIN)
    log.info("tap hub running")
    while True:
        events = dict(poller.poll())
        if inbox.fd in events and any(s in STOP_SIGNALS for s in inbox.take()):
            return
        # Move whatever is queued each way; XPUB drops for subscribers that lag.
        for src, dst in ((front, back), (back, front)):
            if src in events:
                _forward(src, dst)
        for watch in watches:
            if watch.monitor in events:
                watch.take()


def _forward(src: zmq.Socket[bytes], dst: zmq.Socket[bytes], limit: int = 1024) -> None:
    for _ in range(limit):
        try:
            frames = src.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        # A full subscriber or publisher queue: the tap drops, it never waits.
        with contextlib.suppress(zmq.Again):
            dst.send_multipart(frames, zmq.NOBLOCK)


def run_tap_client(
    config: Config,
    stages: Sequence[str],
    out: BinaryIO | None = None,
    inbox: SignalInbox | None = None,
) -> int:
    """Print what ``stages`` (all when empty) emit, as JSON lines, until SIGINT/SIGTERM."""
    unknown = [s for s in stages if s not in STAGE_NAMES]
    if unknown:
        sys.stderr.write(
            f"procsmith tap: no stage {', '.join(unknown)}; stages are {', '.join(STAGE_NAMES)}\n"
        )
        return exitcodes.USAGE
    try:
        security = load_security(config.transport, [TAP_CLIENT]).for_role(TAP_CLIENT)
        endpoints = Endpoints(config.transport, binders(), security=security, role=TAP_CLIENT)
    except (ConfigError, RunDirError) as err:
        sys.stderr.write(f"procsmith tap: {err}\n")
        return exitcodes.USAGE
    inbox = inbox if inbox is not None else SignalInbox()
    out = out if out is not None else sys.stdout.buffer
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sub = endpoints.open(ctx, zmq.SUB, "tap-out", bind=False)
    for stage in stages or [""]:
        sub.setsockopt(zmq.SUBSCRIBE, f"{stage}/".encode() if stage else b"")
    codec = Codec()
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    poller.register(inbox.fd, zmq.POLLIN)
    bad = 0
    try:
        while True:
            events = dict(poller.poll())
            if inbox.fd in events and any(s in STOP_SIGNALS for s in inbox.take()):
                break
            while sub in events:
                try:
                    topic, payload = sub.recv_multipart(zmq.NOBLOCK)
                    record = codec.decode(payload)
                except zmq.Again:
                    break
                except (ValueError, msgspec.DecodeError):
                    bad += 1
                    continue
                out.write(tap_line(topic.decode(errors="replace").split("/")[0], record))
            out.flush()
    except BrokenPipeError:
        pass  # `procsmith tap | head` is a normal way to stop
    finally:
        sub.close(linger=0)
        ctx.term()
        endpoints.close()
    if bad:
        sys.stderr.write(f"procsmith tap: {bad} frames could not be decoded\n")
    return exitcodes.OK
