"""The supervisor's HTTP endpoint (/metrics, /healthz), served without ever blocking.

Every socket is non-blocking and watched by a selector of its own, whose file descriptor the
supervisor's loop watches among its others; so a client that trickles its request, reads its
answer slowly or just sits there costs the supervisor nothing but a file descriptor. Each
client has ``timeout`` seconds for its whole exchange; at most ``max_connections`` are open
at once, and a new one pushes out the oldest, so a crowd of idle clients cannot keep
another out. One request per connection (``Connection: close``).
"""

from __future__ import annotations

import logging
import selectors
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from stages.base.catalog import CATALOG, HTTP_DROPPED

log = logging.getLogger("procsmith.http")

Answer = Callable[[str], tuple[int, bytes, str]]  # path → (status, body, content type)
MAX_REQUEST_BYTES = 8192  # a request line and headers; a longer request is dropped
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error"}
_REASONS[503] = "Service Unavailable"


@dataclass
class _Client:
    sock: socket.socket
    deadline: float
    request: bytearray = field(default_factory=bytearray)
    reply: memoryview | None = None


class HttpServer:
    """Listens on ``addr``; ``serve`` handles whatever is ready, never waiting."""

    def __init__(
        self, addr: tuple[str, int], answer: Answer, *, timeout: float, max_connections: int
    ) -> None:
        self.answer = answer
        self.timeout = timeout
        self.max_connections = max_connections
        family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        self.listener = socket.create_server(addr, family=family, backlog=64)
        self.listener.setblocking(False)
        self.server_address: tuple[str, int] = self.listener.getsockname()[:2]
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.clients: dict[int, _Client] = {}  # by fd, oldest first
        self.dropped: dict[str, int] = {}

    def fileno(self) -> int:
        """Readable when some socket of this server is ready (an epoll descriptor)."""
        return self.selector.fileno()

    def fds(self) -> list[int]:
        """Every descriptor the server holds (a forked child closes them)."""
        return [self.selector.fileno(), self.listener.fileno(), *self.clients]

    def next_deadline(self) -> float | None:
        return min((c.deadline for c in self.clients.values()), default=None)

    def serve(self) -> None:
        """Accept, read and write what is ready now; drop clients past their deadline."""
        for key, events in self.selector.select(0):
            if key.fileobj is self.listener:
                self._accept()
                continue
            client = self.clients.get(key.fd)
            if client is None:
                continue
            if events & selectors.EVENT_READ and client.reply is None:
                self._read(client)
            elif events & selectors.EVENT_WRITE:
                self._write(client)
        now = time.monotonic()
        for client in [c for c in self.clients.values() if c.deadline <= now]:
            self._drop(client, "timeout")

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:  # EMFILE and the like: leave the rest in the backlog
                log.warning("cannot accept a metrics connection: %s", err.strerror)
                return
            if len(self.clients) >= self.max_connections:
                self._drop(next(iter(self.clients.values())), "cap")
            sock.setblocking(False)
            client = _Client(sock, time.monotonic() + self.timeout)
            self.clients[sock.fileno()] = client
            self.selector.register(sock, selectors.EVENT_READ)

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client, "closed")
            return
        client.request += data
        end = client.request.find(b"\r\n\r\n")
        if end < 0:
            end = client.request.find(b"\n\n")
        if end < 0:
            if len(client.request) > MAX_REQUEST_BYTES:
                self._drop(client, "too_big")
            return
        client.reply = memoryview(self._respond(bytes(client.request[:end])))
        self.selector.modify(client.sock, selectors.EVENT_WRITE)
        self._write(client)

    def _respond(self, head: bytes) -> bytes:
        parts = head.split(b"\n", 1)[0].split()
        method = parts[0] if parts else b""
        path = parts[1].decode("latin-1") if len(parts) > 1 else "/"
        if method not in (b"GET", b"HEAD"):
            status, body, ctype = 405, b"only GET and HEAD\n", "text/plain"
        else:
            try:
                status, body, ctype = self.answer(path.split("?")[0])
            except Exception as err:
                log.exception("serving %s failed", path)
                status, body, ctype = 500, f"error: {err}\n".encode(), "text/plain"
        lines = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            "Server: procsmith\r\nConnection: close\r\n\r\n"
        )
        return lines.encode() + (body if method != b"HEAD" else b"")

    def _write(self, client: _Client) -> None:
        assert client.reply is not None  # noqa: S101 - only writable once answered
        try:
            sent = client.sock.send(client.reply)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(client)
            return
        client.reply = client.reply[sent:]
        if not client.reply:
            self._close(client)

    def _drop(self, client: _Client, reason: str) -> None:
        if reason != "closed":
            self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self._close(client)

    def _close(self, client: _Client) -> None:
        self.clients.pop(client.sock.fileno(), None)
        self.selector.unregister(client.sock)
        client.sock.close()

    def close(self) -> None:
        for client in list(self.clients.values()):
            self._close(client)
        self.selector.close()
        self.listener.close()


class DroppedCollector(Collector):
    """The server's dropped connections, by reason, as a counter."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            HTTP_DROPPED.removesuffix("_total"), CATALOG[HTTP_DROPPED].help, labels=["reason"]
        )
        for reason, n in sorted(self.server.dropped.items()):
            family.add_metric([reason], float(n))
        yield family
