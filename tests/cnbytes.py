"""Hand-built connector datagrams, packed from the kernel's layouts (linux/cn_proc.h)."""

from __future__ import annotations

import struct

from stages.cnproc import (
    CN_MSG,
    EVENT_HDR,
    NLMSG_DONE,
    NLMSG_HDR,
    PROC_EVENT_COMM,
    PROC_EVENT_EXEC,
    PROC_EVENT_EXIT,
    PROC_EVENT_FORK,
    PROC_EVENT_NONE,
)

UNION_BYTES = 24  # sizeof the event_data union: the exit body, the largest


def message(
    what: int,
    body: bytes,
    *,
    kind: int = NLMSG_DONE,
    ts: int = 0,
    ack: int = 0,
    idx: int = 1,
    val: int = 1,
    cn_len: int | None = None,
    nl_len: int | None = None,
    pad_union: bool = True,
) -> bytes:
    """One nlmsghdr + cn_msg + proc_event, as the kernel lays it out; the lengths can lie."""
    if pad_union:
        body = body.ljust(UNION_BYTES, b"\0")
    event = EVENT_HDR.pack(what, 0, ts) + body
    cn = CN_MSG.pack(idx, val, 0, ack, len(event) if cn_len is None else cn_len, 0) + event
    length = NLMSG_HDR.size + len(cn) if nl_len is None else nl_len
    raw = NLMSG_HDR.pack(length, kind, 0, 0, 0) + cn
    return raw + b"\0" * (-len(raw) % 4)


def fork(parent: int, child: int, *, child_tgid: int | None = None, ts: int = 0) -> bytes:
    tgid = child if child_tgid is None else child_tgid
    return message(PROC_EVENT_FORK, struct.pack("<iiii", parent, parent, child, tgid), ts=ts)


def exec_(pid: int, ts: int = 0) -> bytes:
    return message(PROC_EVENT_EXEC, struct.pack("<ii", pid, pid), ts=ts)


def exit_(pid: int, code: int = 0, parent: int = 1, ts: int = 0) -> bytes:
    return message(
        PROC_EVENT_EXIT, struct.pack("<iiIIii", pid, pid, code, 17, parent, parent), ts=ts
    )


def comm(pid: int, name: bytes) -> bytes:
    return message(PROC_EVENT_COMM, struct.pack("<ii16s", pid, pid, name))


def ack(ack_value: int, err: int) -> bytes:
    return message(PROC_EVENT_NONE, struct.pack("<I", err), ack=ack_value)
