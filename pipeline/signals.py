"""Signal handling, in one place, for every procsmith process.

Handlers only record what arrived; the loops find out by polling the read end of a pipe
that ``signal.set_wakeup_fd`` writes to, so a signal wakes a ``zmq.Poller`` or a selector at
once instead of waiting for a timeout.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class SignalInbox:
    """Catches ``signums``; ``fd`` becomes readable when one arrives."""

    def __init__(self, signums: Iterable[signal.Signals] = STOP_SIGNALS) -> None:
        self.signums = tuple(signums)
        self.received: list[int] = []
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._old_wakeup = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        for signum in self.signums:
            signal.signal(signum, self._record)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)

    @property
    def fd(self) -> int:
        return self._read

    def take(self) -> list[int]:
        """The signals received since the last call (and empties the pipe)."""
        try:
            while os.read(self._read, 512):
                pass
        except BlockingIOError:
            pass
        got, self.received = self.received, []
        return got

    def close(self) -> None:
        """Restore default dispositions (used in a forked child before it runs a stage)."""
        for signum in self.signums:
            signal.signal(signum, signal.SIG_DFL)
        signal.set_wakeup_fd(self._old_wakeup)
        os.close(self._read)
        os.close(self._write)
