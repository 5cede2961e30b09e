"""The kernel's process-events connector, as bytes: the messages it sends and the one it takes.

Layouts (linux/netlink.h, linux/connector.h, linux/cn_proc.h; native byte order, which is
little-endian on every platform procsmith runs on, so ``<`` is spelled out):

- ``struct nlmsghdr``: u32 len (header included), u16 type, u16 flags, u32 seq, u32 pid —
  16 bytes; messages in one datagram start at 4-byte aligned offsets.
- ``struct cn_msg``: u32 idx, u32 val (the connector id), u32 seq, u32 ack, u16 len (of the
  data after it), u16 flags — 20 bytes.
- ``struct proc_event``: u32 what, u32 cpu, u64 timestamp_ns (aligned to 8, so at offset 8),
  then the union of per-event bodies: fork 4 x pid_t; exec 2; exit pid, tgid, exit_code,
  exit_signal, parent_pid, parent_tgid; comm pid, tgid, char[16]; ack u32 err. The union is
  24 bytes, so the kernel's event is 40 bytes and one message 76; a body is only read as far
  as its own fields, so an older kernel's shorter exit body (no parent fields) still parses.

The connector sends events as ``NLMSG_DONE`` messages, one per datagram. Parsing never
raises: whatever cannot be read as an event is counted under a reason and skipped.
"""

from __future__ import annotations

import struct
from collections import Counter
from typing import Final

import msgspec

NETLINK_CONNECTOR: Final = 11
CN_IDX_PROC: Final = 1
CN_VAL_PROC: Final = 1
PROC_CN_MCAST_LISTEN: Final = 1
PROC_CN_MCAST_IGNORE: Final = 2

NLMSG_NOOP: Final = 1
NLMSG_ERROR: Final = 2
NLMSG_DONE: Final = 3
NLMSG_OVERRUN: Final = 4

PROC_EVENT_NONE: Final = 0x0  # the kernel's acknowledgement of a listen/ignore request
PROC_EVENT_FORK: Final = 0x1
PROC_EVENT_EXEC: Final = 0x2
PROC_EVENT_UID: Final = 0x4
PROC_EVENT_GID: Final = 0x40
PROC_EVENT_SID: Final = 0x80
PROC_EVENT_PTRACE: Final = 0x100
PROC_EVENT_COMM: Final = 0x200
PROC_EVENT_NONZERO_EXIT: Final = 0x20000000  # only sent to listeners that filter for it
PROC_EVENT_COREDUMP: Final = 0x40000000
PROC_EVENT_EXIT: Final = 0x80000000

NLMSG_HDR: Final = struct.Struct("<IHHII")
CN_MSG: Final = struct.Struct("<IIIIHH")
EVENT_HDR: Final = struct.Struct("<IIQ")
_TWO_PIDS: Final = struct.Struct("<ii")
_FOUR: Final = struct.Struct("<iiii")
_EXIT: Final = struct.Struct("<iiII")
_EXIT_PARENT: Final = struct.Struct("<ii")
_ERR: Final = struct.Struct("<I")
_NLMSG_ERR: Final = struct.Struct("<i")
COMM_LEN: Final = 16

Buffer = bytes | bytearray | memoryview


class Fork(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """A task was created. A new process when ``child_pid == child_tgid``; otherwise a thread
    of process ``child_tgid``. The parent process is ``parent_tgid``. ``ts``: the kernel's
    monotonic clock in ns (``time.monotonic_ns`` compares with it)."""

    parent_pid: int
    parent_tgid: int
    child_pid: int
    child_tgid: int
    ts: int = 0


class Exec(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """A process replaced its program. Sent after the exec took over the thread group, so
    ``pid == tgid`` (a non-leader thread that execs takes the leader's pid first)."""

    pid: int
    tgid: int
    ts: int = 0


class Exit(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """A task ended. The process ended when ``pid == tgid`` — its leader thread; the leader
    can also end before its other threads (``pthread_exit``), so a process may still be listed
    after its leader's Exit. ``exit_code`` is the kernel's wait status (``os.waitstatus_to_
    exitcode`` decodes it); ``parent_tgid`` is 0 from kernels that do not send it."""

    pid: int
    tgid: int
    exit_code: int
    exit_signal: int = 0
    parent_tgid: int = 0
    ts: int = 0


class Other(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """Any other event (comm, uid, gid, sid, ptrace, coredump, unknown): ``what`` as sent,
    and the pid/tgid that every event body starts with (0 when the body is shorter)."""

    what: int
    pid: int = 0
    tgid: int = 0


class Ack(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """The kernel's answer to a listen/ignore request: ``ack`` is the request's ack + 1;
    ``err`` an errno (0: done). Acks are multicast, so every listener sees everyone's."""

    ack: int
    err: int


class Lost(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """Events were lost before this point (``enobufs``: the socket's buffer was full;
    ``overrun``: an NLMSG_OVERRUN; ``truncated``: a datagram larger than the read buffer).
    The caller cannot know which: it must read everything again (a full scan round)."""

    reason: str


Event = Fork | Exec | Exit | Other | Ack | Lost


def listen_message(op: int = PROC_CN_MCAST_LISTEN, *, seq: int = 0, ack: int = 0) -> bytes:
    """The request that starts (or, with ``PROC_CN_MCAST_IGNORE``, stops) the event stream:
    nlmsghdr + cn_msg addressed to the proc connector + the u32 op (the pre-6.6 form, which
    every kernel takes and which asks for all events)."""
    body = CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, seq, ack, 4, 0) + _ERR.pack(op)
    return NLMSG_HDR.pack(NLMSG_HDR.size + len(body), NLMSG_DONE, 0, seq, 0) + body


def _align(n: int) -> int:
    return (n + 3) & ~3


def parse_datagram(data: Buffer, skipped: Counter[str]) -> list[Event]:
    """Every event in one datagram, in order. What cannot be read is counted in ``skipped``
    by reason: one count per message, or one for the rest of the datagram once a length
    makes it impossible to find the next message. Raises nothing."""
    events: list[Event] = []
    end = len(data)
    offset = 0
    while offset < end:
        if end - offset < NLMSG_HDR.size:
            skipped["truncated_header"] += 1
            break
        length, kind, _flags, _seq, _pid = NLMSG_HDR.unpack_from(data, offset)
        if length < NLMSG_HDR.size or length > end - offset:
            skipped["bad_length"] += 1  # where the next message starts is unknown
            break
        body = offset + NLMSG_HDR.size
        if kind == NLMSG_DONE:
            _connector(data, body, offset + length, events, skipped)
        elif kind == NLMSG_OVERRUN:
            events.append(Lost("overrun"))
        elif kind == NLMSG_ERROR:
            _error(data, body, offset + length, skipped)
        elif kind == NLMSG_NOOP:
            skipped["noop"] += 1
        else:
            skipped["unknown_type"] += 1
        offset += _align(length)
    return events


def _error(data: Buffer, at: int, end: int, skipped: Counter[str]) -> None:
    if end - at < _NLMSG_ERR.size:
        skipped["truncated_error"] += 1
        return
    (code,) = _NLMSG_ERR.unpack_from(data, at)
    skipped["nlmsg_ack" if code == 0 else "nlmsg_error"] += 1


def _connector(
    data: Buffer,
    at: int,
    end: int,
    events: list[Event],
    skipped: Counter[str],
) -> None:
    """One connector message between ``at`` and ``end`` (the nlmsghdr's extent)."""
    if end - at < CN_MSG.size:
        skipped["truncated_cn_msg"] += 1
        return
    idx, val, _seq, ack, length, _flags = CN_MSG.unpack_from(data, at)
    if (idx, val) != (CN_IDX_PROC, CN_VAL_PROC):
        skipped["foreign_connector"] += 1
        return
    at += CN_MSG.size
    if length > end - at:
        skipped["bad_cn_length"] += 1
        return
    end = at + length  # the event is only as long as the connector says
    if end - at < EVENT_HDR.size:
        skipped["truncated_event"] += 1
        return
    what, _cpu, ts = EVENT_HDR.unpack_from(data, at)
    at += EVENT_HDR.size
    if what == PROC_EVENT_NONE:
        event: Event | None = _ack(data, at, end - at, ack)
    else:
        event = _BODIES.get(what, _other)(data, at, end - at, what, ts)
    if event is None:
        skipped["truncated_event"] += 1
    else:
        events.append(event)


# Each reads one event body of ``room`` bytes at ``at``; ``None`` when it is shorter than its
# type's fields.


def _exec(data: Buffer, at: int, room: int, _what: int, ts: int) -> Event | None:
    if room < _TWO_PIDS.size:
        return None
    pid, tgid = _TWO_PIDS.unpack_from(data, at)
    return Exec(pid, tgid, ts)


def _fork(data: Buffer, at: int, room: int, _what: int, ts: int) -> Event | None:
    if room < _FOUR.size:
        return None
    parent_pid, parent_tgid, child_pid, child_tgid = _FOUR.unpack_from(data, at)
    return Fork(parent_pid, parent_tgid, child_pid, child_tgid, ts)


def _exit(data: Buffer, at: int, room: int, _what: int, ts: int) -> Event | None:
    if room < _EXIT.size:
        return None
    pid, tgid, code, signal = _EXIT.unpack_from(data, at)
    parent = 0
    if room >= _EXIT.size + _EXIT_PARENT.size:
        _ppid, parent = _EXIT_PARENT.unpack_from(data, at + _EXIT.size)
    return Exit(pid, tgid, code, signal, parent, ts)


def _other(data: Buffer, at: int, room: int, what: int, _ts: int) -> Event | None:
    if room >= _TWO_PIDS.size:
        pid, tgid = _TWO_PIDS.unpack_from(data, at)
        return Other(what, pid, tgid)
    return Other(what)


def _ack(data: Buffer, at: int, room: int, ack: int) -> Event | None:
    if room < _ERR.size:
        return None
    return Ack(ack, _ERR.unpack_from(data, at)[0])


_BODIES = {PROC_EVENT_EXEC: _exec, PROC_EVENT_FORK: _fork, PROC_EVENT_EXIT: _exit}
