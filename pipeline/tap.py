"""The debugging tap: every stage PUBlishes what it emits to the tap hub; ``procsmith tap``
subscribes there.

The hub is an XSUB/XPUB proxy (the ZeroMQ guide's pattern): stages connect a publisher to its
XSUB, any number of ``procsmith tap`` clients connect a SUB to its XPUB, and subscriptions
travel upstream, so a stage publishes only topics somebody is watching — with no tap client
a stage sends nothing. Topics are ``<stage>/<instance>``. PUB and XPUB drop for a subscriber
that does not keep up; nothing on the tap path ever blocks a stage.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Sequence
from typing import BinaryIO

import msgspec
import zmq

from pipeline.config import Config
from pipeline.signals import STOP_SIGNALS, SignalInbox
from pipeline.transport import Codec, Endpoints, open_socket
from pipeline.wiring import STAGE_NAMES, binders
from stages.base import exitcodes
from stages.base.render import tap_line

log = logging.getLogger("procsmith.tap")
# A subscription the hub holds for itself, to a topic no stage publishes: every publisher
# that connects is sent it with the tap clients' subscriptions, which tells a starting stage
# that those have arrived (pipeline.runner waits for it).
HUB_PRIMER = b"\x01\x00procsmith-hub"


def run_taphub(config: Config, inbox: SignalInbox | None = None) -> int:
    """The hub, until SIGTERM/SIGINT. Its callers have checked the run directory (preflight)."""
    inbox = inbox if inbox is not None else SignalInbox()
    endpoints = Endpoints(config.transport, binders())
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    t = config.transport
    front = open_socket(ctx, zmq.XSUB, endpoints.bind("tap-in"), bind=True, config=t)
    back = open_socket(ctx, zmq.XPUB, endpoints.bind("tap-out"), bind=True, config=t)
    front.send(HUB_PRIMER)
    poller = zmq.Poller()
    for item in (front, back, inbox.fd):
        poller.register(item, zmq.POLLIN)
    log.info("tap hub running")
    try:
        while True:
            events = dict(poller.poll())
            if inbox.fd in events and any(s in STOP_SIGNALS for s in inbox.take()):
                break
            # Move whatever is queued each way; XPUB drops for subscribers that lag.
            for src, dst in ((front, back), (back, front)):
                if src in events:
                    _forward(src, dst)
    finally:
        front.close()
        back.close()
        ctx.term()
    return exitcodes.OK


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
    inbox = inbox if inbox is not None else SignalInbox()
    out = out if out is not None else sys.stdout.buffer
    endpoints = Endpoints(config.transport, binders())
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sub = open_socket(
        ctx, zmq.SUB, endpoints.connect("tap-out"), bind=False, config=config.transport
    )
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
    if bad:
        sys.stderr.write(f"procsmith tap: {bad} frames could not be decoded\n")
    return exitcodes.OK
