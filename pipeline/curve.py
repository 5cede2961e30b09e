"""ZeroMQ CURVE on tcp endpoints: who may connect to what, refused before any frame is read.

The socket that binds an endpoint is its CURVE server (``secure_server``); the sockets that
connect are CURVE clients (``secure_client``), whatever the pattern (PUSH/PULL, PUB/XSUB,
SUB/XPUB). A CURVE handshake only proves the client holds *some* secret key, so each server
socket names a ZAP domain (the endpoint) and the process runs one ``ZapAuthenticator``,
which admits a client only if its public key is one of the roles allowed on that domain.

What happens to a peer that is not admitted (checked with pyzmq 27.3 / libzmq 4.3.5):

- unknown key: the ZAP reply is 400, libzmq closes the connection; the monitor reports
  ``EVENT_HANDSHAKE_FAILED_AUTH``; the authenticator counts it by domain.
- no CURVE at all (a NULL-mechanism ZeroMQ peer): the greeting's mechanism does not match
  and the connection is closed before ZAP is asked (``EVENT_HANDSHAKE_FAILED_PROTOCOL``).
- raw bytes that are not ZMTP: closed in the greeting (``…_PROTOCOL`` or ``…_NO_DETAIL``).

In every case no frame of that peer reaches the application socket, so nothing is decoded.
``secure_server`` also sets ``ZAP_ENFORCE_DOMAIN``: without it a CURVE server whose process
has no ZAP handler admits every client key — with it, such a server admits nobody.

Why a thread for ZAP: libzmq's I/O thread asks ZAP during the handshake and holds the
connection until the answer comes. The stage loop may be busy (a match judging an
executable, a send waiting up to ``transport.send_timeout``), and handshakes should not wait
on it; the ZAP work is a set lookup with no shared state but two counters under a lock.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import Counter
from collections.abc import Collection, Mapping
from types import TracebackType

import zmq
from zmq.utils import z85

from pipeline.keyring import Keyring
from pipeline.monitor import queued_events

log = logging.getLogger("procsmith.curve")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # fixed by RFC 27: one handler per Context
# The handshake failures that are refusals; EVENT_DISCONNECTED follows each of them.
REFUSAL_EVENTS = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
_LOG_EVERY = 1000
_stop_ids = itertools.count()


def secure_server(sock: zmq.Socket[bytes], keyring: Keyring, own_name: str, *, domain: str) -> None:
    """Make ``sock`` (before ``bind``) a CURVE server as ``own_name``, admitting by ``domain``."""
    sock.curve_secretkey = keyring.secret_key(own_name)
    sock.curve_publickey = keyring.public_key(own_name)
    sock.curve_server = True
    sock.zap_domain = domain.encode()
    sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)


def secure_client(
    sock: zmq.Socket[bytes], keyring: Keyring, own_name: str, server_name: str
) -> None:
    """Make ``sock`` (before ``connect``) a CURVE client as ``own_name`` of ``server_name``."""
    sock.curve_serverkey = keyring.public_key(server_name)
    sock.curve_publickey = keyring.public_key(own_name)
    sock.curve_secretkey = keyring.secret_key(own_name)


def refusal_reason(event: int, value: int) -> str | None:
    """The metric reason of a monitor event, or None when it is not a refused handshake."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return "unknown_key"
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        return "no_curve" if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH else "protocol"
    if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        return "handshake"
    return None


class HandshakeWatch:
    """Counts the refused handshakes on one socket through its monitor (by reason).

    A socket has one monitor: where the runner already monitors a socket, it should add
    ``REFUSAL_EVENTS`` to that monitor's events and use ``refusal_reason`` instead.
    """

    def __init__(self, sock: zmq.Socket[bytes]) -> None:
        self._sock = sock
        self.monitor = sock.get_monitor_socket(REFUSAL_EVENTS)
        self.refused: Counter[str] = Counter()

    def take(self) -> Counter[str]:
        """Read what the monitor has queued; returns the new refusals by reason."""
        new: Counter[str] = Counter()
        for kind, value in queued_events(self.monitor):
            reason = refusal_reason(kind, value)
            if reason is not None:
                new[reason] += 1
        self.refused.update(new)
        return new

    def close(self) -> None:
        self._sock.disable_monitor()
        self.monitor.close(linger=0)


class ZapAuthenticator:
    """The process's ZAP handler: on ``domain``, admit only the keys of ``policy[domain]``.

    Start it before binding any CURVE server in ``ctx``; stop it before ``ctx.term()``.
    ``refused()`` is the number of handshakes it turned away (the runner exports it).
    """

    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        keyring: Keyring,
        policy: Mapping[str, Collection[str]],
    ) -> None:
        self._ctx = ctx
        self._allowed = {
            domain: {z85.decode(keyring.public_key(role)): role for role in roles}
            for domain, roles in policy.items()
        }
        self._stop_addr = f"inproc://procsmith-zap-stop-{next(_stop_ids)}"
        self._lock = threading.Lock()
        self._refused: Counter[str] = Counter()
        self._admitted = 0
        self._ready = threading.Event()
        self._error: zmq.ZMQError | None = None
        self._thread = threading.Thread(target=self._serve, name="procsmith-zap", daemon=True)

    def start(self) -> ZapAuthenticator:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error  # EADDRINUSE: this Context already has a ZAP handler
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        stopper = self._ctx.socket(zmq.PAIR)
        stopper.linger = 0
        stopper.connect(self._stop_addr)
        stopper.send(b"stop")
        self._thread.join()
        stopper.close()

    def refused(self) -> int:
        with self._lock:
            return sum(self._refused.values())

    def refused_by_domain(self) -> dict[str, int]:
        with self._lock:
            return dict(self._refused)

    def admitted(self) -> int:
        with self._lock:
            return self._admitted

    def __enter__(self) -> ZapAuthenticator:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _serve(self) -> None:
        zap = self._ctx.socket(zmq.REP)
        zap.linger = 0
        stop = self._ctx.socket(zmq.PAIR)
        stop.linger = 0
        try:
            zap.bind(ZAP_ENDPOINT)
            stop.bind(self._stop_addr)
        except zmq.ZMQError as err:
            self._error = err
            zap.close()
            stop.close()
            self._ready.set()
            return
        self._ready.set()
        poller = zmq.Poller()
        poller.register(zap, zmq.POLLIN)
        poller.register(stop, zmq.POLLIN)
        try:
            while True:
                events = dict(poller.poll())
                if stop in events:
                    return
                if zap in events:
                    zap.send_multipart(self.answer(zap.recv_multipart()))
        except zmq.ContextTerminated:
            return
        finally:
            zap.close()
            stop.close()

    def answer(self, frames: list[bytes]) -> list[bytes]:
        """The ZAP reply (RFC 27) to one request: 200 for an allowed key, else 400."""
        request_id = frames[1] if len(frames) > 1 else b""
        if len(frames) < 6 or frames[0] != b"1.0":
            return self._deny(request_id, "(malformed)", "a malformed ZAP request", b"")
        domain, address, mechanism = frames[2], frames[3], frames[5]
        shown_domain = domain.decode(errors="replace")
        credentials = frames[6:]
        if mechanism != b"CURVE" or len(credentials) != 1:
            why = f"mechanism {mechanism.decode(errors='replace')}"
            return self._deny(request_id, shown_domain, why, address)
        role = self._allowed.get(shown_domain, {}).get(credentials[0])
        if role is None:
            key = z85.encode(credentials[0]).decode() if len(credentials[0]) == 32 else "?"
            return self._deny(request_id, shown_domain, f"key {key} not admitted", address)
        with self._lock:
            self._admitted += 1
        return [b"1.0", request_id, b"200", b"OK", role.encode(), b""]

    def _deny(self, request_id: bytes, domain: str, why: str, address: bytes) -> list[bytes]:
        with self._lock:
            self._refused[domain] += 1
            n = sum(self._refused.values())
        if n % _LOG_EVERY == 1:  # the first, and every 1000th after it
            peer = address.decode(errors="replace")
            log.warning(
                "refused a peer on %s from %s: %s (%d refused so far)", domain, peer, why, n
            )
        return [b"1.0", request_id, b"400", b"not admitted", b"", b""]
