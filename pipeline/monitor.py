"""The events a socket's monitor has queued, read without waiting.

pyzmq's ``zmq.utils.monitor`` does the same, but importing it imports ``zmq.asyncio`` and
with it asyncio (about 30 modules): every stage process would carry them for a 6-byte frame.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import zmq

_EVENT = struct.Struct("=HI")  # libzmq's first frame: event id (16 bits), value (32 bits)


def queued_events(monitor: zmq.Socket[bytes]) -> Iterator[tuple[int, int]]:
    """(event, value) of each message queued on the PAIR socket ``monitor``; a message not
    in libzmq's two-frame form is passed over."""
    while True:
        try:
            frames = monitor.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        if len(frames) == 2 and len(frames[0]) == _EVENT.size:
            yield _EVENT.unpack(frames[0])
