"""What a stage that drops could not send at once, held for its route until that has room.

A stage whose sends never wait (scan, tree, classify, filter, events) that finds the next
stage's queue full does not drop the rest of its batch there and then: it holds those
records, not yet encoded, and the loop sends them as the route drains (it polls the route for
room, reading its own input meanwhile). When the stage says something newer for that route,
what is still held is stale and dropped — counted, the stage told, as any drop: the filter
offers those processes again next round (D7). So a burst moves at the next stage's pace
instead of one queue's worth per round, and a round of 150,000 records for a full queue
costs the encoding of only those sent.
"""

from __future__ import annotations

from collections import deque

import zmq

from stages.base.schema import Record

Route = zmq.Socket[bytes]


class HeldSends:
    """Records held per route, oldest first."""

    def __init__(self) -> None:
        self._held: dict[Route, deque[Record]] = {}

    def routes(self) -> list[Route]:
        """The routes something is held for."""
        return list(self._held)

    def hold(self, route: Route, record: Record) -> None:
        self._held.setdefault(route, deque()).append(record)

    def first(self, route: Route) -> Record | None:
        """The oldest record held for ``route`` (still held), or None."""
        held = self._held.get(route)
        return held[0] if held else None

    def sent_first(self, route: Route) -> None:
        """The oldest record held for ``route`` was sent."""
        held = self._held[route]
        held.popleft()
        if not held:
            del self._held[route]

    def release(self, route: Route) -> list[Record]:
        """Everything held for ``route``, no longer held (stale: the caller drops it)."""
        return list(self._held.pop(route, ()))
