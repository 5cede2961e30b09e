"""Counting what happens to the connections of a socket, through its monitor.

A socket has one monitor, so one ``PeerWatch`` counts both things the runner and the tap hub
want to know of a socket: closed input connections (``procsmith_stage_input_disconnects_total``:
a peer that stopped, or one ZeroMQ cut off for a frame over ``max_message_bytes``) and, on a
CURVE server, handshakes refused before any frame was read
(``procsmith_transport_peers_refused_total{stage,endpoint,reason}``: a key not admitted,
a peer without CURVE, bytes that are not ZeroMQ). A refused handshake also closes the
connection, so on an input socket it is counted as a disconnect too.
"""

from __future__ import annotations

import zmq

from pipeline.curve import REFUSAL_EVENTS, refusal_reason
from pipeline.monitor import queued_events
from stages.base.catalog import INPUT_DISCONNECTS, TRANSPORT_PEERS_REFUSED
from stages.base.meter import Meter


class PeerWatch:
    """The monitor of ``sock`` (on endpoint ``endpoint`` of ``stage``), read by ``take``."""

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        meter: Meter,
        *,
        stage: str,
        endpoint: str,
        disconnects: bool,
        refusals: bool,
    ) -> None:
        self._sock = sock
        self.meter = meter
        self.stage = stage
        self.endpoint = endpoint
        events = (zmq.EVENT_DISCONNECTED if disconnects else 0) | (
            REFUSAL_EVENTS if refusals else 0
        )
        self.monitor = sock.get_monitor_socket(events)

    def take(self) -> None:
        """Count what the monitor has queued."""
        for kind, value in queued_events(self.monitor):
            if kind == zmq.EVENT_DISCONNECTED:
                self.meter.inc(INPUT_DISCONNECTS, stage=self.stage)
                continue
            reason = refusal_reason(kind, value)
            if reason is not None:
                self.meter.inc(
                    TRANSPORT_PEERS_REFUSED, stage=self.stage, endpoint=self.endpoint, reason=reason
                )

    def close(self) -> None:
        self._sock.disable_monitor()
        self.monitor.close(linger=0)
