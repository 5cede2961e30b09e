"""What the supervisor knows of each stage process it runs (read by health and metrics)."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field


@dataclass
class Child:
    name: str
    index: int
    count: int
    pid: int | None = None
    started: float = 0.0
    due: float = 0.0  # when to start it (again)
    restarts: int = 0
    crashes: collections.deque[float] = field(default_factory=collections.deque)
    stalls: int = 0  # times it was found making no progress (supervisor.stall_timeout)
    stalled_pid: int | None = None  # the process last found stalled (counted once)

    @property
    def label(self) -> str:
        return f"{self.name}/{self.index}"
