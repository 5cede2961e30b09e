"""A live subscription to the kernel's process events (fork, exec, exit), without eBPF.

``subscribe()`` opens ``socket(AF_NETLINK, SOCK_DGRAM, NETLINK_CONNECTOR)``, binds it to the
multicast group ``CN_IDX_PROC``, sends ``PROC_CN_MCAST_LISTEN`` and waits for the kernel's
acknowledgement. It returns a ``ProcEventSource`` or an ``Unavailable`` that says why, with a
bounded label fit for a metric. What the kernel does where it cannot serve us (seen on 6.18):

- another network namespace: socket and bind succeed, ``send`` fails with ECONNREFUSED (the
  connector's kernel socket exists only in the initial one) → ``not_initial_netns``;
- another user or pid namespace: the request is ignored without an answer (events would name
  the initial namespace's pids) → ``not_initial_userns`` / ``not_initial_pidns``;
- no connector in the kernel (``CONFIG_CONNECTOR``): ``socket`` fails EPROTONOSUPPORT →
  ``no_connector``; connector without ``CONFIG_PROC_EVENTS``: no answer → ``no_ack``;
- without CAP_NET_ADMIN: kernels before 6.6 answer EPERM → ``no_cap_net_admin``; 6.6 and
  later let any user listen (the answer is 0), so the subscription is live.

Only the kernel may speak on this socket. Sending a netlink datagram to another socket's port
id takes CAP_NET_ADMIN (an unprivileged sender gets EPERM), but a privileged process in the
initial network namespace can, so a datagram whose sender is not port 0 is counted
(``not_from_kernel``) and dropped rather than read as a forged exec or loss.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import time
from collections import Counter
from typing import Final

import msgspec

from stages.cnproc import (
    CN_IDX_PROC,
    NETLINK_CONNECTOR,
    PROC_CN_MCAST_IGNORE,
    PROC_CN_MCAST_LISTEN,
    Ack,
    Event,
    Lost,
    listen_message,
    parse_datagram,
)

SO_RCVBUFFORCE: Final = getattr(socket, "SO_RCVBUFFORCE", 33)
RCVBUF_BYTES: Final = 32 << 20  # each queued event costs ~830 bytes of it: ~40,000 events
DATAGRAM_BUFFER: Final = 1 << 16  # the kernel's are 76 bytes; a larger one is not the kernel's
READ_DATAGRAMS: Final = 512  # default bound on the datagrams one read() takes
ACK_TIMEOUT: Final = 1.0


class Unavailable(msgspec.Struct, frozen=True):
    """Why process events cannot be had: ``reason`` a bounded label, ``detail`` for the log."""

    reason: str
    detail: str


class ProcEventSource:
    """A subscribed, non-blocking connector socket. ``read`` returns the events queued now.

    Counters: ``skipped`` (messages not read as events, by reason), ``lost`` (``Lost``
    markers returned), ``datagrams`` (taken from the kernel). ``fileno()`` is for a poller.
    """

    def __init__(self, sock: socket.socket, pending: list[Event], skipped: Counter[str]) -> None:
        self._sock = sock
        self._pending = pending
        self._buffer = bytearray(DATAGRAM_BUFFER)
        self.skipped = skipped
        self.lost = sum(1 for e in pending if isinstance(e, Lost))
        self.datagrams = 0

    def fileno(self) -> int:
        return self._sock.fileno()

    @property
    def port_id(self) -> int:
        """The socket's netlink port id (the address a sender would name)."""
        port: int = self._sock.getsockname()[0]
        return port

    def read(self, max_datagrams: int = READ_DATAGRAMS) -> list[Event]:
        """The events of at most ``max_datagrams`` datagrams, without waiting. A ``Lost``
        marker stands where the kernel dropped events (ENOBUFS); acks are left out."""
        events, self._pending = self._pending, []
        buffer, view, skipped = self._buffer, memoryview(self._buffer), self.skipped
        recv = self._sock.recvfrom_into
        for _ in range(max_datagrams):
            try:
                size, (sender, _groups) = recv(buffer, 0, socket.MSG_TRUNC)
            except BlockingIOError:
                break
            except OSError as err:
                if err.errno != errno.ENOBUFS:
                    raise
                events.append(Lost("enobufs"))  # the error is cleared; the queue reads on
                self.lost += 1
                continue
            if sender != 0:
                skipped["not_from_kernel"] += 1
                continue
            self.datagrams += 1
            if size > len(buffer):
                events.append(Lost("truncated"))
                self.lost += 1
                continue
            for event in parse_datagram(view[:size], skipped):
                if isinstance(event, Ack):
                    continue
                if isinstance(event, Lost):
                    self.lost += 1
                events.append(event)
        return events

    def wait(self, timeout: float) -> bool:
        """Whether a datagram is ready within ``timeout`` seconds."""
        if self._pending:
            return True
        ready, _, _ = select.select([self._sock], [], [], max(0.0, timeout))
        return bool(ready)

    def dropped(self) -> int | None:
        """How many datagrams the kernel dropped for this socket since it opened (its
        ``sk_drops`` in /proc/self/net/netlink); ``None`` when that cannot be read."""
        inode = str(os.fstat(self._sock.fileno()).st_ino)
        try:
            with open("/proc/self/net/netlink", encoding="ascii") as table:
                for line in table:
                    fields = line.split()
                    if len(fields) >= 10 and fields[9] == inode:
                        return int(fields[8])
        except (OSError, ValueError):
            return None
        return None

    def close(self) -> None:
        """Tell the kernel we stop listening (its listener count has no other decrement),
        then close."""
        if self._sock.fileno() < 0:
            return
        with contextlib.suppress(OSError):  # closing anyway
            self._sock.send(listen_message(PROC_CN_MCAST_IGNORE))
        self._sock.close()

    def __enter__(self) -> ProcEventSource:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def subscribe(
    *, rcvbuf: int = RCVBUF_BYTES, timeout: float = ACK_TIMEOUT
) -> ProcEventSource | Unavailable:
    """Subscribe to process events, or say why that is not possible here. Raises nothing
    for what the kernel refuses; waits at most ``timeout`` seconds for its answer."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
    except OSError as err:
        return unavailable_for(err, "socket")
    try:
        _set_rcvbuf(sock, rcvbuf)
        sock.bind((0, 1 << (CN_IDX_PROC - 1)))
        ack = int.from_bytes(os.urandom(4), "little") >> 1  # ours, among others' acks
        sock.send(listen_message(PROC_CN_MCAST_LISTEN, ack=ack))
        sock.setblocking(False)
        result = _await_ack(sock, ack + 1, timeout)
    except OSError as err:
        sock.close()
        return unavailable_for(err, "subscribe")
    if isinstance(result, Unavailable):
        sock.close()
    return result


def _set_rcvbuf(sock: socket.socket, size: int) -> None:
    """A large receive buffer: beyond net.core.rmem_max only with CAP_NET_ADMIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def _await_ack(sock: socket.socket, want: int, timeout: float) -> ProcEventSource | Unavailable:
    """Read until the kernel's answer to our request; events read meanwhile are kept."""
    skipped: Counter[str] = Counter()
    pending: list[Event] = []
    source = ProcEventSource(sock, pending, skipped)
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if not source.wait(left):
            break
        for event in _read_with_acks(sock, skipped):
            if isinstance(event, Ack):
                if event.ack == want:
                    return (
                        source if event.err == 0 else unavailable_for(OSError(event.err, ""), "ack")
                    )
                continue
            pending.append(event)
    return _silent()


def _read_with_acks(sock: socket.socket, skipped: Counter[str]) -> list[Event]:
    events: list[Event] = []
    while True:
        try:
            data, (sender, _groups) = sock.recvfrom(DATAGRAM_BUFFER)
        except BlockingIOError:
            return events
        except OSError as err:
            if err.errno != errno.ENOBUFS:
                raise
            events.append(Lost("enobufs"))
            continue
        if sender != 0:
            skipped["not_from_kernel"] += 1
            continue
        events.extend(parse_datagram(data, skipped))


def unavailable_for(err: OSError, step: str) -> Unavailable:
    """What an errno from ``step`` of subscribing says about this machine."""
    code = err.errno or 0
    name = errno.errorcode.get(code, str(code))
    if code in (errno.EPERM, errno.EACCES):
        return Unavailable("no_cap_net_admin", f"{step}: {name}: listening needs CAP_NET_ADMIN")
    if code == errno.EPROTONOSUPPORT:
        return Unavailable("no_connector", f"{step}: {name}: kernel without CONFIG_CONNECTOR")
    if code == errno.ECONNREFUSED:
        return Unavailable(
            "not_initial_netns",
            f"{step}: {name}: the proc connector exists only in the initial network "
            "namespace (run with network_mode: host)",
        )
    return Unavailable("error", f"{step}: {name}: {os.strerror(code)}")


def _silent() -> Unavailable:
    """The kernel did not answer: it ignores requests from other user or pid namespaces,
    and a kernel without CONFIG_PROC_EVENTS has no one to answer."""
    if not _initial_userns():
        return Unavailable("not_initial_userns", "no answer: not in the initial user namespace")
    if not _initial_pidns():
        return Unavailable("not_initial_pidns", "no answer: not in the initial pid namespace")
    return Unavailable("no_ack", "no answer from the proc connector (CONFIG_PROC_EVENTS?)")


def _initial_userns() -> bool:
    """The initial user namespace maps every uid to itself; any other maps fewer."""
    try:
        with open("/proc/self/uid_map", encoding="ascii") as uid_map:
            return uid_map.read().split() == ["0", "0", "4294967295"]
    except OSError:
        return True  # cannot tell: say nothing about it


def _initial_pidns() -> bool:
    """NSpid lists a pid per level below the procfs mount's namespace: one in the initial."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("NSpid:"):
                    return len(line.split()) == 2
    except OSError:
        pass
    return True
