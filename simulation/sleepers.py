"""Extra sleeping processes on the real /proc, in a process group of their own that always ends.

A helper (its own session, so its group is nobody else's) spawns ``n`` ``sleep`` processes,
says so, and waits on its stdin. Leaving the context SIGKILLs the group; if the bench itself
dies, the helper reads EOF on its stdin and kills the group, and every sleep ends by itself
after ``SLEEP_SECONDS`` in any case.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time

SLEEP_SECONDS = 900
_HELPER = """
import os, signal, sys
sleep = sys.argv[1]
for _ in range(int(sys.argv[2])):
    os.posix_spawn(sleep, ["sleep", sys.argv[3]], {})
sys.stdout.write("ready\\n")
sys.stdout.flush()
sys.stdin.read()
os.killpg(0, signal.SIGKILL)
"""


class Sleepers:
    """``with Sleepers(2000): ...`` — 2,000 more processes on this machine meanwhile."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._helper: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Sleepers:
        sleep = shutil.which("sleep") or "/bin/sleep"
        self._helper = subprocess.Popen(
            [sys.executable, "-c", _HELPER, sleep, str(self.n), str(SLEEP_SECONDS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert self._helper.stdout is not None  # noqa: S101 - stdout=PIPE
        try:
            if self._helper.stdout.readline() != b"ready\n":
                raise RuntimeError("the sleepers' helper did not start them")
        except BaseException:
            self._end()
            raise
        return self

    @property
    def helper_pid(self) -> int:
        """The helper's pid: the parent of every sleep it started (until it ends)."""
        if self._helper is None:
            raise RuntimeError("the sleepers are not started")
        return self._helper.pid

    def _end(self) -> None:
        helper = self._helper
        if helper is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(helper.pid, signal.SIGKILL)
        helper.wait()
        # The sleeps were children of the helper; init reaps them. Wait until they are gone.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(helper.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)
        raise RuntimeError(f"process group {helper.pid} outlived SIGKILL")

    def __exit__(self, *exc: object) -> None:
        self._end()
