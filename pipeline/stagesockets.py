"""The sockets one stage process holds, opened once its Context exists.

Its input (PULL: bound by a stable stage, connected by a scaled one), one PUSH per output
endpoint, the tap (XPUB, connected to the hub) and the monitors that count closed and refused
connections. At start they get a moment for their peers to connect (``wait_for_peers``); at
exit they are closed with the LINGER each was given.
"""

from __future__ import annotations

import time

import zmq

from pipeline.bounds import link_hwm
from pipeline.configschema import Config
from pipeline.peers import PeerWatch
from pipeline.signals import SignalInbox
from pipeline.transport import Endpoints
from pipeline.wiring import StageWiring, binder_of
from stages.base.meter import Meter

PEER_WAIT = 1.0  # at start, how long to wait for the next stages to be connected


class StageSockets:
    def __init__(
        self,
        wiring: StageWiring,
        *,
        meter: Meter,
        ctx: zmq.Context[zmq.Socket[bytes]],
        endpoints: Endpoints,
        config: Config,
    ) -> None:
        self._all: list[zmq.Socket[bytes]] = []
        # One monitor per socket that counts something: the input's closed connections, and
        # on every CURVE server (each socket that binds, over tcp with keys) the handshakes
        # refused before a frame was read.
        self.watches: list[PeerWatch] = []

        def sock(kind: int, endpoint: str, bind: bool) -> zmq.Socket[bytes]:
            s = endpoints.open(ctx, kind, endpoint, bind=bind, hwm=link_hwm(endpoint, config))
            self._all.append(s)
            is_input = endpoint == wiring.input and kind == zmq.PULL
            refusals = bind and endpoints.curve
            if is_input or refusals:
                # ZeroMQ refuses a frame over MAXMSGSIZE by closing the sender's connection;
                # the monitor is how that (and any other closed input connection) is counted.
                self.watches.append(
                    PeerWatch(
                        s,
                        meter,
                        stage=wiring.name,
                        endpoint=endpoint,
                        disconnects=is_input,
                        refusals=refusals,
                    )
                )
            return s

        self.input: zmq.Socket[bytes] | None = None
        if wiring.input is not None:
            self.input = sock(zmq.PULL, wiring.input, bind=not wiring.scaled)
        by_endpoint = {
            ep: sock(zmq.PUSH, ep, bind=binder_of(ep) == wiring.name)
            for ep in sorted(set(wiring.routes.values()))
        }
        self.routes = {kind: by_endpoint[ep] for kind, ep in wiring.routes.items()}
        self.send_flags = 0 if wiring.waits else zmq.NOBLOCK
        if wiring.waits:
            for s in by_endpoint.values():
                s.setsockopt(zmq.SNDTIMEO, int(config.transport.send_timeout * 1000))
        # XPUB rather than PUB: it hands us the subscriptions, so a starting stage can wait
        # until the hub's have arrived (see wait_for_peers) instead of publishing its first
        # records into the void; they are read and discarded as they come (``drain_tap``).
        self.tap = sock(zmq.XPUB, "tap-in", bind=False)

    def wait_for_peers(self, inbox: SignalInbox, budget: float = PEER_WAIT) -> None:
        """Give output connections a moment to complete, so the first round is not dropped
        only because the next stage's socket was still being connected (bounded: a peer
        that is really down is what drops and D7 are for)."""
        pending = {s for s in self.routes.values()}
        # The hub always holds one subscription of its own (HUB_PRIMER) and sends every
        # subscription it holds to a publisher that connects, in one batch: once one has
        # come, what tap clients subscribe to has come with it.
        tap_pending = True
        deadline = time.monotonic() + budget
        while (pending or tap_pending) and time.monotonic() < deadline:
            poller = zmq.Poller()
            for s in pending:
                poller.register(s, zmq.POLLOUT)
            if tap_pending:
                poller.register(self.tap, zmq.POLLIN)
            poller.register(inbox.fd, zmq.POLLIN)
            events = dict(poller.poll(int((deadline - time.monotonic()) * 1000) + 1))
            if inbox.fd in events:
                return  # a signal: let run() see it
            pending -= {s for s in pending if s in events}
            if self.tap in events:
                self.drain_tap()
                tap_pending = False

    def drain_tap(self) -> None:
        """Read the subscription messages queued on the tap socket (XPUB keeps each one for
        us to read; unread, they would pile up as tap clients come and go)."""
        while True:
            try:
                self.tap.recv(zmq.NOBLOCK)
            except zmq.Again:
                return

    def close(self) -> None:
        for watch in self.watches:
            watch.take()
            watch.close()
        for s in self._all:
            s.close()  # LINGER was set on each: queued frames get that long to leave
