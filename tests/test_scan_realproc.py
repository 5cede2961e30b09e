"""The scan's steady state on this machine's real /proc: an exec under the same pid is seen at
the next round, and a kept descriptor never reads another process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from pipeline.configschema import Config
from pipeline.local import LocalDetector
from simulation.harness import wait_until
from simulation.workspace import SimNode, SimulatedTree, catches, workspace
from stages.base.meter import Tally
from stages.shardreader import ShardReader
from tests.unprivileged import throwaway_user

pytestmark = pytest.mark.realproc

SLEEP = shutil.which("sleep") or "/bin/sleep"
# Becomes `sleep` (same pid, same starttime, another executable) on SIGUSR1.
EXECS_ON_USR1 = f"""
import os, signal
signal.signal(signal.SIGUSR1, lambda *_: os.execv({SLEEP!r}, ["sleep", "86400"]))
while True:
    signal.pause()
"""


# An unprivileged user's program that names itself like the tail of a stat line (a naive
# parser, splitting at the first ")", would read this process's ppid and starttime as 1) and
# burns CPU on SIGUSR1, so its stat line moves without an exec.
HOSTILE_COMM = b") Z 1 1 1 1 1 1"
NAMES_ITSELF = f"""
import ctypes, signal, sys, time
ctypes.CDLL(None).prctl(15, {HOSTILE_COMM!r})
signal.signal(signal.SIGUSR1, lambda *_: sum(range(10**7)))
print("ready", flush=True)
while True:
    time.sleep(99)
"""


def test_a_process_that_execs_another_binary_is_judged_again_next_round() -> None:
    execer = SimNode("execer", ["python3", "-c", EXECS_ON_USR1], executable=sys.executable)
    with SimulatedTree(workspace([execer], workspace_id="ws-exec")) as sim:
        pid = sim.pids["execer"]
        wait_until("the handler", lambda: catches(pid, signal.SIGUSR1))
        detector = LocalDetector(Config(proc_root="/proc"))
        (before,) = [p for p in detector.round() if p.pid == pid]
        assert before.cmdline[0] == "python3"
        # Judged: not handed on again, unless only with its maps, read since (D10: at its
        # first full re-read, which may fall on this round, or because it ran on after the
        # first read); a record with the maps is news to a caller who judges them.
        again = [p for p in detector.round() if p.pid == pid]
        assert all(p.maps_id not in (0, before.maps_id) for p in again)
        assert [msgspec.structs.replace(p, maps_id=before.maps_id) for p in again] in ([], [before])

        os.kill(pid, signal.SIGUSR1)
        wait_until("the exec", lambda: os.path.realpath(f"/proc/{pid}/exe") == SLEEP)
        (after,) = [p for p in detector.round() if p.pid == pid]
        sleep = os.stat(SLEEP)
        assert (after.pid, after.starttime) == (before.pid, before.starttime)
        assert after.cmdline == ["sleep", "86400"]
        assert (after.exe_dev, after.exe_ino) == (sleep.st_dev, sleep.st_ino)
        assert after.workspace == before.workspace
        detector.reader.close()


def test_a_reused_pid_is_read_afresh_not_through_the_old_descriptor() -> None:
    """The kept stat descriptor belongs to the process, not to its number: once the process is
    gone it fails, whatever process is listed under that pid later."""
    proc = subprocess.Popen([SLEEP, "86400"])
    try:
        reader = ShardReader("/proc", Tally())
        reader.read(1)
        assert any(p.pid == proc.pid for p in reader.read(2).procs)
        entry = reader._known[proc.pid]
        assert entry.fd >= 0  # kept from its second round on
        proc.kill()
        proc.wait()
        with pytest.raises(ProcessLookupError):
            os.pread(entry.fd, 4096, 0)
        assert all(p.pid != proc.pid for p in reader.read(3).procs)
        assert proc.pid not in reader._known
        reader.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_user_naming_itself_like_a_stat_tail_keeps_its_record_when_it_runs() -> None:
    """A real unprivileged user's process with a comm of ``) Z 1 1 1 1 1 1``: the first read
    and, once it has run (its stat line moved, no exec), the moved line's one split count
    fields after the last ``)``: the same record (its maps read), the real ppid, nothing
    skipped."""
    with throwaway_user() as user:
        child = subprocess.Popen(
            ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups",
             "/usr/bin/python3", "-c", NAMES_ITSELF],
            stdout=subprocess.PIPE, cwd="/",
        )  # fmt: skip
        try:
            assert child.stdout is not None and child.stdout.readline() == b"ready\n"
            meter = Tally()
            reader = ShardReader("/proc", meter, recheck_every=10_000)  # no full re-read
            first = {p.pid: p for p in reader.read(1).procs}[child.pid]
            assert (first.comm, first.ppid) == (HOSTILE_COMM.decode(), os.getpid())
            reader.read(2)
            line = Path(f"/proc/{child.pid}/stat").read_bytes()
            os.kill(child.pid, signal.SIGUSR1)
            wait_until("its stat line to move", lambda: _moved_and_asleep(child.pid, line))
            again = {p.pid: p for p in reader.read(3).procs}[child.pid]
            # The same record, with its maps now read: a moved line whose size is new has
            # them read (a full read, taken for an exec, would have left them unread).
            assert again.maps_id != 0
            assert msgspec.structs.replace(again, maps_id=0) == first
            assert meter.get("procsmith_scan_skipped_total", reason="malformed_stat") == 0
            reader.close()
        finally:
            child.kill()
            child.wait()


def _moved_and_asleep(pid: int, before: bytes) -> bool:
    now = Path(f"/proc/{pid}/stat").read_bytes()
    return now != before and now.rsplit(b")", 1)[1].split()[0] == b"S"
