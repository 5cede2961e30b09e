"""The events stage's logic in this process on the real kernel (no mocks of netlink), and
what classify, filter and match do with processes read at their exec (plain records)."""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from simulation.elfbins import ElfBins
from stages.base.catalog import (
    CLASSIFY_EXECS,
    EVENTS_AVAILABLE,
    EVENTS_LOST,
    EVENTS_MALFORMED,
    EVENTS_PINS_OVERFLOW,
    EVENTS_RESYNCS,
    MATCH_PINNED,
    MATCH_SKIPPED,
    ROUNDS,
)
from stages.base.meter import Tally
from stages.base.schema import (
    ExecBatch,
    ExecWorkloads,
    Filtered,
    Finding,
    Judged,
    Kind,
    Process,
    RawProcess,
    Record,
    Round,
    Workloads,
)
from stages.classify import ClassifyStage, process_record
from stages.cnproc import NETLINK_CONNECTOR
from stages.events import EventsStage
from stages.execread import ExecReader
from stages.filter import FilterStage, SeenFilter
from stages.match import Matcher
from stages.pins import PinnedExecutables
from stages.procevents import ProcEventSource, Unavailable, subscribe
from stages.procfs import read_stat
from stages.signatures import SignatureSet
from stages.statline import parse_stat
from tests import cnbytes
from tests.test_matcher import signatures

__all__ = ["signatures"]  # the fixture, shared with the matcher's tests
WAIT = 10.0


def live_source(**kwargs: int) -> ProcEventSource:
    if os.geteuid() != 0:
        pytest.skip("the connector tests run as root")
    source = subscribe(**kwargs)
    if isinstance(source, Unavailable):
        pytest.skip(f"process events unavailable here: {source.reason}")
    return source


def no_full_read() -> list[RawProcess]:
    return [RawProcess(1, 0, 1, "init", ["/sbin/init"])]


@pytest.fixture
def stage(tally: Tally) -> Iterator[EventsStage]:
    reader = ExecReader("/proc", PinnedExecutables())
    events = EventsStage(live_source(), reader, no_full_read, tally, pin_hold=0.5)
    yield events
    events.close()


def batches_until(stage: EventsStage, done: Callable[[ExecBatch], bool]) -> list[ExecBatch]:
    """What the stage emits (woken whenever its socket is readable) until ``done``."""
    fd = stage.wake_fd()
    assert fd is not None
    seen: list[ExecBatch] = []
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        out: Sequence[Record] = stage.woken(time.time()) if ready else ()
        for record in out:
            assert isinstance(record, ExecBatch)
            seen.append(record)
            if done(record):
                return seen
    pytest.fail(f"not done within {WAIT} s")


def starttime(pid: int) -> int:
    stat = parse_stat(read_stat(f"/proc/{pid}/stat"))
    assert stat is not None
    return stat.starttime


def test_an_exec_is_read_with_its_ancestry_and_a_pin_released_after_its_hold(
    stage: EventsStage, tally: Tally
) -> None:
    assert tally.get(EVENTS_AVAILABLE, reason="live") == 1
    assert tally.get(EVENTS_LOST, reason="start") == 1  # what came before it is unknown
    (full,) = stage.tick(time.time())  # so a full read comes at once
    assert isinstance(full, ExecBatch) and full.complete
    child = subprocess.Popen(["procsmith-test-sleep", "0.05"], executable="/bin/sleep")

    def mine(b: ExecBatch) -> bool:
        return any(p.pid == child.pid for p in b.procs)

    batch = batches_until(stage, mine)[-1]
    child.wait()
    i = next(i for i, p in enumerate(batch.procs) if p.pid == child.pid)
    proc, chain = batch.procs[i], batch.ancestry[i]
    assert proc.cmdline == ["procsmith-test-sleep", "0.05"]
    assert proc.ppid == os.getpid()
    assert chain[0] == (os.getpid(), starttime(os.getpid()))
    assert chain[1] == (os.getppid(), starttime(os.getppid()))
    sleep = os.stat("/bin/sleep")
    assert (proc.exe_dev, proc.exe_ino) == (sleep.st_dev, sleep.st_ino)
    # the process has exited; its executable is still there through the pin
    assert Path(proc.pin).read_bytes() == Path("/bin/sleep").read_bytes()
    assert stage.pins.held_files >= 1
    due = stage.next_tick(time.time())
    assert due is not None
    stage.tick(due + 0.6)
    assert len(stage.pins) == 0 and stage.pins.held_files == 0


def test_a_forged_datagram_is_counted_and_the_stage_reads_on(
    stage: EventsStage, tally: Tally
) -> None:
    assert stage.source is not None
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR) as forger:
        forger.sendto(cnbytes.exec_(4_000_000), (stage.source.port_id, 0))
        forger.sendto(b"\x01\x02\x03", (stage.source.port_id, 0))
    child = subprocess.Popen(["/bin/sleep", "0.2"])
    batches = batches_until(stage, lambda b: any(p.pid == child.pid for p in b.procs))
    child.wait()
    assert not [p for b in batches for p in b.procs if p.pid == 4_000_000]
    assert tally.get(EVENTS_MALFORMED, reason="not_from_kernel") == 2


def test_lost_events_are_counted_and_followed_by_one_full_read(tally: Tally) -> None:
    reader = ExecReader("/proc", PinnedExecutables())
    stage = EventsStage(live_source(rcvbuf=4096), reader, no_full_read, tally)
    try:
        now = time.time()
        stage.tick(now)  # the full read at start
        for _ in range(80):
            subprocess.run(["/bin/true"], check=True)
        out = stage.woken(now + 0.1)
        assert tally.get(EVENTS_LOST, reason="enobufs") >= 1
        # at most one full read a second: the loss right after the start's waits for it
        assert not [r for r in out if isinstance(r, ExecBatch) and r.complete]
        due = stage.next_tick(now + 0.1)
        assert due is not None and due <= now + 1.0 + 1e-6
        (full,) = [r for r in stage.tick(due) if isinstance(r, ExecBatch)]
        assert full.complete and full.procs == no_full_read()
        assert tally.get(EVENTS_RESYNCS) == 2
        # a batch classify's queue refused is counted lost; no full read adds to its queue
        stage.dropped(ExecBatch("/proc", []), due + 5)
        assert tally.get(EVENTS_LOST, reason="dropped") == 1
        assert (stage.next_tick(due + 5) or float("inf")) > due + 5
    finally:
        stage.close()


def test_pins_over_their_bound_are_counted(tally: Tally, tmp_path: Path) -> None:
    other = tmp_path / "other-sleep"
    shutil.copy("/bin/sleep", other)
    reader = ExecReader("/proc", PinnedExecutables(max_files=1))
    stage = EventsStage(live_source(), reader, no_full_read, tally)
    try:
        children = [subprocess.Popen([str(path), "0.3"]) for path in ("/bin/sleep", other)]
        pids = {c.pid for c in children}
        got: set[int] = set()

        def both(b: ExecBatch) -> bool:
            got.update(p.pid for p in b.procs if p.pid in pids)
            return got == pids

        batches_until(stage, both)
        for c in children:
            c.wait()
        assert stage.pins.held_files == 1
        assert tally.get(EVENTS_PINS_OVERFLOW, reason="evicted") == 1
    finally:
        stage.close()


def test_without_the_connector_the_stage_says_why_and_idles(tally: Tally) -> None:
    reader = ExecReader("/proc", PinnedExecutables())
    why = Unavailable("not_initial_netns", "send: ECONNREFUSED")
    stage = EventsStage(why, reader, no_full_read, tally)
    assert stage.wake_fd() is None and stage.next_tick(0.0) is None
    assert tally.get(EVENTS_AVAILABLE, reason="not_initial_netns") == 0
    assert tally.get(EVENTS_LOST, reason="start") == 0
    stage.close()


# -- classify, filter and match on records -------------------------------------------------

RING1 = RawProcess(10, 1, 500, "ring1", ["/proc/self/exe", "ring1"], gitpod_env={})
SUPERVISOR = RawProcess(11, 10, 501, "supervisor", ["supervisor", "init"])
SHELL = RawProcess(12, 11, 502, "bash", ["bash"])
OUTSIDER = RawProcess(20, 1, 510, "cron", ["cron"])
ROUND = Round(
    7, "/proc", [RawProcess(1, 0, 1, "init", ["init"]), RING1, SUPERVISOR, SHELL, OUTSIDER]
)


def exec_batch(*procs: tuple[RawProcess, list[tuple[int, int]]]) -> ExecBatch:
    return ExecBatch("/proc", [p for p, _ in procs], [c for _, c in procs])


def workloads_of(classify: ClassifyStage, batch: ExecBatch) -> ExecWorkloads:
    (out,) = classify.handle(batch, 0.0)
    assert isinstance(out, ExecWorkloads)
    return out


def test_classify_attributes_an_exec_by_its_nearest_known_ancestor(tally: Tally) -> None:
    classify = ClassifyStage(tally)
    assert workloads_of(classify, exec_batch((RawProcess(30, 12, 600, "m", ["m"]), []))).procs == []
    classify.handle(ROUND, 0.0)
    fresh = RawProcess(31, 30, 601, "miner", ["miner"], pin="/proc/9/fd/3")
    out = workloads_of(
        classify,
        exec_batch(
            # its parent is new since the round; its grandparent the round's shell
            (fresh, [(30, 600), (12, 502), (11, 501), (10, 500)]),
            # a pid the round knew inside, now another process (starttime): not attributed
            (RawProcess(32, 12, 602, "x", ["x"]), [(12, 999), (1, 1)]),
            # outside every workspace
            (RawProcess(33, 20, 603, "y", ["y"]), [(20, 510)]),
            # the workspace's supervisor exec'd: not a workload
            (RawProcess(11, 10, 501, "supervisor", ["supervisor", "init"]), [(10, 500)]),
            # a workload exec'd another program: judged again
            (RawProcess(12, 11, 502, "zsh", ["zsh"]), [(11, 501), (10, 500)]),
        ),
    )
    assert [(p.pid, p.kind) for p in out.procs] == [
        (31, Kind.USER_WORKLOAD),
        (12, Kind.USER_WORKLOAD),
    ]
    assert out.procs[0].workspace is not None and out.procs[0].workspace.pid == 11
    assert out.procs[0].pin == "/proc/9/fd/3"
    assert tally.get(CLASSIFY_EXECS, result="workload") == 2
    assert tally.get(CLASSIFY_EXECS, result="outside") == 4


def test_a_complete_batch_is_classified_like_a_round_and_becomes_the_last(tally: Tally) -> None:
    classify = ClassifyStage(tally)
    out = workloads_of(classify, ExecBatch("/proc", list(ROUND.procs), complete=True))
    assert [p.pid for p in out.procs] == [12]
    later = workloads_of(classify, exec_batch((RawProcess(40, 12, 700, "m", ["m"]), [(12, 502)])))
    assert [p.pid for p in later.procs] == [40]


def workload(raw: RawProcess) -> Process:
    return process_record(raw, Kind.USER_WORKLOAD, None, "/proc")


def test_a_partial_batch_is_not_a_round_to_the_filter(tally: Tally) -> None:
    seen = SeenFilter(1, tally)
    stage = FilterStage(seen, tally, ack_timeout=60, max_attempts=3)
    live = [workload(RawProcess(pid, 1, 100 + pid, "w", ["w"], 8, pid)) for pid in (50, 51, 52)]
    out = stage.handle(Workloads(1, live), 0.0)
    for p in out:
        if isinstance(p, Process):
            stage.sent(p, 0.0)  # match took it (the filter takes verdicts only on those)
            seen.judged(p)
    assert len(seen) == 3 and tally.get(ROUNDS) == 1
    # the same process from its exec, then from a poll: one key, judged once
    fresh_raw = RawProcess(60, 1, 160, "m", ["m"], 8, 60, pin="/proc/9/fd/4")
    fresh = workload(fresh_raw)
    assert stage.handle(ExecWorkloads([fresh], 1), 1.0) == [fresh]  # no Filtered, no round
    stage.sent(fresh, 1.0)
    seen.judged(fresh)
    assert tally.get(ROUNDS) == 1
    # the live processes, absent from the partial batch, were not made evictable by it
    assert all(p in seen for p in live) and fresh in seen
    polled = workload(RawProcess(60, 1, 160, "m", ["m"], 8, 60))
    again = stage.handle(Workloads(2, [*live, polled]), 2.0)
    assert [r for r in again if isinstance(r, Process)] == []
    assert [type(r) for r in again] == [Filtered] and tally.get(ROUNDS) == 2


def test_match_judges_an_exited_process_through_its_pin(
    elf_bins: ElfBins, tmp_path: Path, signatures: SignatureSet, tally: Tally
) -> None:
    binary = tmp_path / "gone-miner"
    shutil.copy(elf_bins.miner, binary)
    pins = PinnedExecutables()
    ident = pins.pin("p", os.open(binary, os.O_RDONLY))
    assert ident is not None
    binary.unlink()  # deleted, as a careful miner does
    pin = pins.path("p") or ""
    gone_pid = 4_000_001  # no such process: its /proc/<pid>/exe is gone
    raw = RawProcess(gone_pid, 1, 5, "m", ["m"], ident[0], ident[1], pin=pin)
    matcher = Matcher(signatures, tally, max_exe_bytes=1 << 30, cache_size=8)
    (finding,) = matcher.judge(process_record(raw, Kind.USER_WORKLOAD, None, "/proc"))
    assert isinstance(finding, Finding) and finding.signature == "rx-sym"
    assert tally.get(MATCH_PINNED, result="judged") == 1
    # a pin that now holds another file (its descriptor number reused) is not believed
    other = RawProcess(gone_pid, 1, 5, "m", ["m"], ident[0], ident[1] + 1, pin=pin)
    (judged,) = matcher.judge(process_record(other, Kind.USER_WORKLOAD, None, "/proc"))
    assert isinstance(judged, Judged) and judged.outcome == "vanished"
    assert tally.get(MATCH_PINNED, result="mismatch") == 1
    # a pin that does not look like one is not opened
    odd = RawProcess(gone_pid, 1, 5, "m", ["m"], ident[0], ident[1], pin="/etc/passwd")
    (judged,) = matcher.judge(process_record(odd, Kind.USER_WORKLOAD, None, "/proc"))
    assert isinstance(judged, Judged) and judged.outcome == "vanished"
    assert tally.get(MATCH_PINNED, result="unreadable") == 1
    assert tally.get(MATCH_SKIPPED, reason="vanished") == 2
    pins.close()
