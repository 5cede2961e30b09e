"""The loop every stage process runs, written once.

receive → decode → ``stage.handle`` → encode → send without blocking → publish on the tap →
count; plus the stage's timers (``next_tick``/``tick``), the descriptor a source may be driven
by (``wake_fd``/``woken``: the events stage's netlink socket) and the stop signals. A source (scan)
is a stage without an input; a sink (enforce) one without routes. On SIGTERM/SIGINT the stage
finishes what it is doing, drains what is already queued for it (bounded by
``transport.drain``), emits what it still holds, and closes its sockets with LINGER.

The sockets themselves are ``pipeline.stagesockets``; the process around the loop (preflight,
metrics, the Context) is ``pipeline.stageprocess``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import zmq

from pipeline.configschema import Config
from pipeline.heldsends import HeldSends
from pipeline.memory import IdleTrim, trim
from pipeline.signals import STOP_SIGNALS, SignalInbox
from pipeline.stagesockets import StageSockets
from pipeline.transport import Codec, Endpoints
from pipeline.wiring import StageWiring
from stages.base.catalog import (
    RECORDS_DROPPED,
    RECORDS_IN,
    RECORDS_OUT,
    RECORDS_REFUSED,
    STAGE_HEARTBEAT,
    TRANSPORT_INSECURE,
)
from stages.base.contract import Stage
from stages.base.meter import Meter
from stages.base.schema import Record

log = logging.getLogger("procsmith.runner")

RECEIVE_BATCH = 256  # frames taken per wake-up before timers get a look in
_LOG_EVERY = 1000  # of a run of refused frames, log the first and every 1000th
# The heartbeat the supervisor's stall check reads: written at most this often, and the
# loop wakes at least this often to write it even when it has nothing to do.
HEARTBEAT_EVERY = 0.5
_IDLE_WAKE_MS = 1000


class StageLoop:
    def __init__(
        self,
        wiring: StageWiring,
        *,
        instance: int,
        stage: Stage,
        meter: Meter,
        ctx: zmq.Context[zmq.Socket[bytes]],
        endpoints: Endpoints,
        config: Config,
    ) -> None:
        self.name = wiring.name
        self.stage = stage
        self.meter = meter
        self.codec = Codec()
        self.drain_budget = config.transport.drain
        self.topic = f"{wiring.name}/{instance}".encode()
        self.instance = str(instance)
        self._last_beat = 0.0
        self._refused = 0
        self._trim = IdleTrim()
        self.held = HeldSends()
        self._watching_room: set[zmq.Socket[bytes]] = set()  # routes polled for room
        meter.set(TRANSPORT_INSECURE, 1 if endpoints.security.insecure else 0, stage=self.name)
        self.sockets = StageSockets(
            wiring, meter=meter, ctx=ctx, endpoints=endpoints, config=config
        )
        # The loop's own names for what it uses on every record.
        self.input = self.sockets.input
        self.routes = self.sockets.routes
        self.send_flags = self.sockets.send_flags
        self.tap = self.sockets.tap
        self.watches = self.sockets.watches
        self._wake: int | None = None  # the stage's own descriptor, once run() asked for it

    def beat(self) -> None:
        """Say this process still makes progress (see ``pipeline.liveness``)."""
        now = time.time()
        if now - self._last_beat >= HEARTBEAT_EVERY:
            self._last_beat = now
            self.meter.set(STAGE_HEARTBEAT, now, stage=self.name, instance=self.instance)

    def run(self, inbox: SignalInbox) -> None:
        self.beat()
        self.sockets.wait_for_peers(inbox)
        poller = self._poller(inbox)
        listening = self.input is not None
        while True:
            self.beat()
            listening = self._follow_demand(poller, listening)
            self._watch_room(poller)
            events = dict(poller.poll(self._tick()))
            if not events and self._trim.due(time.monotonic()):
                trim()  # idle after work: the free pages inside the heap go back
            if inbox.fd in events and any(s in STOP_SIGNALS for s in inbox.take()):
                break
            self._serve(events, listening)
        self.drain()

    def _poller(self, inbox: SignalInbox) -> zmq.Poller:
        """What the loop waits on: input, signals, the monitors, the tap's subscriptions,
        and the stage's own descriptor (a source's netlink socket) if it has one."""
        poller = zmq.Poller()
        if self.input is not None:
            poller.register(self.input, zmq.POLLIN)
        poller.register(inbox.fd, zmq.POLLIN)
        for watch in self.watches:
            poller.register(watch.monitor, zmq.POLLIN)
        poller.register(self.tap, zmq.POLLIN)
        self._wake = self.stage.wake_fd()
        if self._wake is not None:
            poller.register(self._wake, zmq.POLLIN)
        return poller

    def _follow_demand(self, poller: zmq.Poller, listening: bool) -> bool:
        """A stage whose own queue is full leaves frames in the socket: its queue fills, and
        the sender drops and counts (D7) instead of this stage growing. Returns whether the
        input is listened to now."""
        if self.input is None or self.stage.wants_input() == listening:
            return listening
        if listening:
            poller.unregister(self.input)
        else:
            poller.register(self.input, zmq.POLLIN)
        return not listening

    def _watch_room(self, poller: zmq.Poller) -> None:
        """Poll the routes records are held for (``HeldSends``) for room, and only those."""
        held = set(self.held.routes())
        for route in held - self._watching_room:
            poller.register(route, zmq.POLLOUT)
        for route in self._watching_room - held:
            poller.unregister(route)
        self._watching_room = held

    def _send_held(self, route: zmq.Socket[bytes]) -> None:
        """Send what is held for ``route`` while it has room."""
        now = time.time()
        while (record := self.held.first(route)) is not None:
            payload = self.codec.encode(record)
            try:
                route.send(payload, zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return  # full again: the poll says when it has room
            self.held.sent_first(route)
            self._sent(record, payload, now)

    def _sent(self, record: Record, payload: bytes, now: float) -> None:
        """``record`` went out on its route: counted, told to the stage, and tapped."""
        self.meter.inc(RECORDS_OUT, stage=self.name)
        self.stage.sent(record, now)
        self._publish(payload)

    def _publish(self, payload: bytes) -> None:
        # The tap never blocks: with no subscriber, or a slow one, the frame is dropped.
        self.tap.send_multipart((self.topic, payload), zmq.NOBLOCK, copy=False)

    def _drop_held(self, route: zmq.Socket[bytes], now: float) -> None:
        stale = self.held.release(route)
        if stale:
            self.meter.inc(RECORDS_DROPPED, len(stale), stage=self.name)
        for record in stale:
            self.stage.dropped(record, now)

    def _tick(self) -> int:
        """Run the stage's tick if it is due; returns how long to poll (milliseconds)."""
        now = time.time()
        due = self.stage.next_tick(now)
        if due is not None and due <= now:
            self.emit(self.stage.tick(now))
            return 0  # a look at signals and input even if ticks run late
        wait = _IDLE_WAKE_MS if due is None else max(1, int((due - now) * 1000) + 1)
        return min(wait, _IDLE_WAKE_MS)

    def _serve(self, events: dict[Any, int], listening: bool) -> None:
        if self.input is not None and self.input in events and listening:
            self.receive(RECEIVE_BATCH)
        for watch in self.watches:
            if watch.monitor in events:
                watch.take()
        if self.tap in events:
            self.sockets.drain_tap()
        if self._wake is not None and self._wake in events:
            self.emit(self.stage.woken(time.time()))
        for route in self.held.routes():
            if route in events:
                self._send_held(route)

    def receive(self, limit: int) -> int:
        """Take up to ``limit`` frames that are already queued, and none once the stage
        wants no more (its own queue is full: the rest waits in the socket, and the sender
        holds or drops); returns how many."""
        assert self.input is not None  # noqa: S101
        for taken in range(limit):
            if not self.stage.wants_input():
                return taken
            try:
                frame = self.input.recv(zmq.NOBLOCK)
            except zmq.Again:
                return taken
            self.accept(frame)
        return limit

    def accept(self, frame: bytes) -> None:
        self.beat()  # a long batch of slow records is progress too
        self.meter.inc(RECORDS_IN, stage=self.name)
        try:
            record = self.codec.decode(frame)
        except msgspec.DecodeError as err:
            self.refuse("malformed", f"{len(frame)}-byte frame: {err}")
            return
        if not isinstance(record, self.stage.accepts):
            self.refuse("unexpected", f"a {type(record).__name__} record")
            return
        self.emit(self.stage.handle(record, time.time()))

    def refuse(self, reason: str, what: str) -> None:
        self.meter.inc(RECORDS_REFUSED, stage=self.name, reason=reason)
        if self._refused % _LOG_EVERY == 0:
            log.warning(
                "%s: dropped %s (%s; %d so far)", self.name, what, reason, self._refused + 1
            )
        self._refused += 1

    def emit(self, records: Sequence[Record]) -> None:
        """Send each record on its route, in order, and publish it on the tap.

        On a stage whose sends wait, a record that still finds no room ends the batch: what
        follows depends on it (match's verdict acknowledges the finding before it), so the
        process goes unacknowledged and the filter offers it again. On a stage that drops, a
        route found full stays full for the rest of the batch: what is left for it is held,
        not encoded, and sent as the route drains (``pipeline.heldsends``) until the stage's
        next batch for that route makes it stale — a filter handing on a round of 150,000
        processes to a full match queue would otherwise spend the round encoding what it
        cannot send, and without reading match's verdicts.
        """
        self._trim.worked()  # every tick, input and wake-up of the stage comes here
        now = time.time()
        full: set[zmq.Socket[bytes]] = set()
        newer: set[zmq.Socket[bytes]] = set()
        for n, record in enumerate(records):
            out = self.routes.get(type(record))
            if out is not None and out not in newer:
                newer.add(out)
                self._drop_held(out, now)  # what an earlier batch left is stale now
            if out is not None and out in full:
                self.held.hold(out, record)
                continue
            payload = self.codec.encode(record)
            if out is None:
                self._publish(payload)  # a record for the tap alone
                continue
            try:
                # copy=False: ZeroMQ sends from the bytes object itself (a round can be tens
                # of MiB; a copy per send would double what the stage holds).
                out.send(payload, self.send_flags, copy=False)
            except zmq.Again:
                if self.send_flags == 0:
                    self.meter.inc(RECORDS_DROPPED, len(records) - n, stage=self.name)
                    self.stage.dropped(record, now)
                    return
                full.add(out)
                self.held.hold(out, record)
                continue
            self._sent(record, payload, now)

    def drain(self) -> None:
        """Handle what is already queued (bounded in time), then what the stage holds."""
        deadline = time.monotonic() + self.drain_budget
        while self.input is not None and time.monotonic() < deadline:
            if not self.receive(16):
                break
        self.emit(self.stage.finish(time.time()))
        now = time.time()
        for route in self.held.routes():
            self._send_held(route)  # what fits now; the rest is dropped, as it stops
            self._drop_held(route, now)

    def close(self) -> None:
        self.sockets.close()
        self.stage.close()
