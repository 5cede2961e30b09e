"""pipeline.heldsends: what a dropping stage holds per route, oldest first."""

from __future__ import annotations

import zmq

from pipeline.heldsends import HeldSends
from stages.base.schema import Judged, Kind, Process


def _proc(pid: int) -> Process:
    return Process(pid, 1, 100, 0, f"/proc/{pid}/exe", ["x"], Kind.USER_WORKLOAD)


def test_held_records_leave_oldest_first_and_a_release_takes_the_rest() -> None:
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PUSH), ctx.socket(zmq.PUSH)
    try:
        held = HeldSends()
        assert held.routes() == [] and held.first(a) is None
        for pid in (1, 2, 3):
            held.hold(a, _proc(pid))
        held.hold(b, Judged(_proc(9), "clean"))
        assert held.first(a) == _proc(1)
        held.sent_first(a)
        assert held.first(a) == _proc(2)
        assert held.release(a) == [_proc(2), _proc(3)]
        assert held.routes() == [b] and held.release(a) == []
        held.sent_first(b)
        assert held.routes() == []
    finally:
        a.close(linger=0)
        b.close(linger=0)
        ctx.term()
