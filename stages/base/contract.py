"""What the runner drives: a stage's logic, with no sockets and no signals.

A stage receives records through ``handle`` and returns the records it emits. Sources (scan)
and stages with deadlines (tree) also say when they next want to run (``next_tick``) and what
they emit then (``tick``). A source driven by a file descriptor (the events stage's netlink
socket) names it in ``wake_fd``; the runner polls it with its sockets and calls ``woken`` when
it is readable. The runner reports the fate of every emitted record: ``sent`` when
the next stage's queue took it, ``dropped`` when it was full (D7 depends on the difference).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from stages.base.schema import Record


class Stage:
    # The record types this stage takes; anything else arriving on its socket is counted
    # and dropped by the runner.
    accepts: ClassVar[tuple[type, ...]] = ()

    def handle(self, record: Record, now: float) -> Sequence[Record]:
        raise TypeError(f"{type(self).__name__} does not take {type(record).__name__}")

    def next_tick(self, now: float) -> float | None:
        """Wall-clock time at which ``tick`` is due, or ``None`` for never."""
        return None

    def tick(self, now: float) -> Sequence[Record]:
        return ()

    def wake_fd(self) -> int | None:
        """A descriptor whose readability calls for ``woken``; ``None`` (the default): none.
        Asked once, when the runner starts its loop."""
        return None

    def woken(self, now: float) -> Sequence[Record]:
        """``wake_fd`` is readable: take what is there (bounded) and return what it makes."""
        return ()

    def sent(self, record: Record, now: float) -> None:
        """``record`` was accepted by the next stage's queue."""

    def dropped(self, record: Record, now: float) -> None:
        """``record`` was refused: the next stage's queue is full (or no stage is there)."""

    def finish(self, now: float) -> Sequence[Record]:
        """What the stage still holds when it stops (after its input is drained)."""
        return ()

    def close(self) -> None:
        """Release files and the like; called once, when the stage stops."""

    def wants_input(self) -> bool:
        """False while the stage holds all it will take: the runner leaves its input queued
        (and the sender, finding the queue full, drops and counts)."""
        return True

    def failure(self) -> str | None:
        """After ``finish``: why the stage stops having failed its duty (enforce: findings
        it could not write out), which makes its process exit 1; ``None`` when it did not."""
        return None
