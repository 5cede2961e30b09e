"""The match stage's logic: judge a new process by its executable and its command line.

    matcher = Matcher(load_signatures(paths), meter, max_exe_bytes=..., cache_size=...)
    records = matcher.judge(proc)  # [Judged], or [Finding] (enforce acknowledges it)

The executable is read through ``<proc_root>/<pid>/exe``; its verdict is cached by
(device, inode, size, mtime), so many processes of one binary cost one scan. Command-line
rules are applied to every process (they do not depend on the executable). Before anything
is reported the pid's starttime is read again: a pid that now names another process
(``reused``) or none (``vanished``) gets no finding — unless the record names the
executable pinned at its exec (``Process.pin``, from the events stage): then a process that
has exited, or whose executable cannot be opened any more, is judged through the pin, once
the pinned file is shown to be the one the record names (device and inode).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NamedTuple

from stages.base.catalog import (
    MATCH_CACHE,
    MATCH_EXE_SCANS,
    MATCH_EXE_TRUNCATED,
    MATCH_FINDINGS,
    MATCH_PINNED,
    MATCH_QUEUE_REFUSED,
    MATCH_QUEUED,
    MATCH_SKIPPED,
)
from stages.base.contract import Stage
from stages.base.meter import Meter
from stages.base.schema import Finding, Judged, Process, Record
from stages.fairqueue import FairQueue
from stages.pidcheck import still_same
from stages.signatures import (
    Hit,
    Identity,
    SignatureSet,
    Unjudgeable,
    most_severe_first,
)
from stages.signatures.exefile import open_regular, read_prefix

log = logging.getLogger("procsmith.match")

FINISH_BUDGET = 0.5  # seconds a stopping match spends on what it still has queued
# What a pin looks like: a descriptor of the events stage, /proc/<holder pid>/fd/<n>.
_PIN_FORM = re.compile(r"/.+/\d+/fd/\d+")

# Why an executable could not be judged, as the Judged outcome says it.
_OUTCOME_OF_PROBLEM = {"denied": "denied", "kernel": "kernel"}


class Verdict(NamedTuple):
    """What the signatures said of one executable; ``problem`` when they could not say."""

    hits: tuple[Hit, ...]
    problem: str | None = None


class Matcher:
    """Judges processes; keeps an LRU of executable verdicts.

    ``delay`` (seconds) is an artificial pause before each process, for back-pressure tests.
    """

    def __init__(
        self,
        signatures: SignatureSet,
        meter: Meter,
        *,
        max_exe_bytes: int,
        cache_size: int,
        scan_timeout: float = 10.0,
        delay: float = 0.0,
    ) -> None:
        if cache_size < 1 or max_exe_bytes < 1:
            raise ValueError("cache_size and max_exe_bytes must be at least 1")
        self.signatures = signatures
        self.signatures.set_timeout(scan_timeout)
        self.meter = meter
        self.max_exe_bytes = max_exe_bytes
        self.cache_size = cache_size
        self.delay = delay
        self._verdicts: OrderedDict[Identity, Verdict] = OrderedDict()

    def judge(self, proc: Process) -> list[Record]:
        if self.delay > 0:
            time.sleep(self.delay)
        verdict = self._judge_executable(proc.path)
        gone = still_same(os.path.dirname(proc.path), proc.starttime)
        if proc.pin and (gone is not None or verdict.problem == "vanished"):
            pinned = self._judge_pinned(proc)
            if pinned is not None:
                # The file the process ran, whatever its pid names now: a verdict on it.
                verdict, gone = pinned, None
        hits = most_severe_first([*verdict.hits, *self.signatures.judge_argv(proc.cmdline)])
        if gone is not None:
            # Nothing is said of a pid that may now be someone else.
            self.meter.inc(MATCH_SKIPPED, reason=gone)
            return [Judged(proc, gone if gone in ("vanished", "reused") else "error")]
        # The pid is still ours, so an executable that "vanished" is one it never had.
        problem = "kernel" if verdict.problem == "vanished" else verdict.problem
        if problem is not None:
            self.meter.inc(MATCH_SKIPPED, reason=problem)
        if hits:
            top = hits[0]
            self.meter.inc(MATCH_FINDINGS, level=top.level, classifier=top.classifier)
            finding = Finding(proc, top.signature, top.level, top.classifier, datetime.now(UTC))
            # No verdict from here: enforce sends it once the finding is written out, so a
            # finding lost with enforce leaves its process unacknowledged, to be offered again.
            return [finding]
        outcome = "clean" if problem is None else _OUTCOME_OF_PROBLEM.get(problem, "error")
        return [Judged(proc, outcome)]

    def _judge_pinned(self, proc: Process) -> Verdict | None:
        """The verdict on the pinned executable, or ``None`` (counted) when the pin cannot be
        opened or holds another file than the record's (its descriptor number was reused)."""
        if not _PIN_FORM.fullmatch(proc.pin):
            self.meter.inc(MATCH_PINNED, result="unreadable")
            return None
        verdict = self._judge_executable(proc.pin, (proc.exe_dev, proc.exe_ino))
        if verdict.problem == "mismatch":
            self.meter.inc(MATCH_PINNED, result="mismatch")
            return None
        if verdict.problem not in (None, "timeout"):
            self.meter.inc(MATCH_PINNED, result="unreadable")
            return None
        self.meter.inc(MATCH_PINNED, result="judged")
        return verdict

    def _judge_executable(self, path: str, expect: tuple[int, int] | None = None) -> Verdict:
        try:
            fd, identity = open_regular(path)
        except Unjudgeable as err:
            return Verdict((), err.reason)
        if expect is not None and (identity.dev, identity.ino) != expect:
            os.close(fd)
            return Verdict((), "mismatch")
        try:
            cached = self._verdicts.get(identity)
            if cached is not None:
                self._verdicts.move_to_end(identity)
                self.meter.inc(MATCH_CACHE, result="hit")
                return cached
            self.meter.inc(MATCH_CACHE, result="miss")
            verdict = self._scan(fd, identity)
        finally:
            os.close(fd)
        if verdict.problem in (None, "timeout"):
            # A timeout is remembered too: 500 copies of a hostile binary cost one timeout.
            self._remember(identity, verdict)
        return verdict

    def _scan(self, fd: int, identity: Identity) -> Verdict:
        try:
            data, truncated = read_prefix(fd, identity.size, self.max_exe_bytes)
            if truncated:
                self.meter.inc(MATCH_EXE_TRUNCATED)
            self.meter.inc(MATCH_EXE_SCANS)
            return Verdict(tuple(self.signatures.judge_bytes(data)))
        except Unjudgeable as err:
            return Verdict((), err.reason)

    def _remember(self, identity: Identity, verdict: Verdict) -> None:
        self._verdicts[identity] = verdict
        if len(self._verdicts) > self.cache_size:
            self._verdicts.popitem(last=False)


class MatchStage(Stage):
    """The runner's face of a Matcher: a process in, its verdict (and any finding) out.

    Processes wait in a ``FairQueue`` and are judged one per tick, so the runner takes new
    ones off the socket between two judgements and no workspace can hold back another's.
    """

    accepts = (Process,)

    def __init__(self, matcher: Matcher, queue: FairQueue | None = None) -> None:
        self.matcher = matcher
        self.queue = queue if queue is not None else FairQueue()
        self._counted = 0

    def handle(self, record: Record, now: float) -> Sequence[Record]:
        assert isinstance(record, Process)  # noqa: S101 - the runner checks `accepts`
        if self.queue.push(record) is not None:
            self.matcher.meter.inc(MATCH_QUEUE_REFUSED)  # unacknowledged: offered again
        self._count()
        return ()

    def next_tick(self, now: float) -> float | None:
        return now if len(self.queue) else None

    def wants_input(self) -> bool:
        return len(self.queue) < self.queue.limit

    def tick(self, now: float) -> Sequence[Record]:
        record = self.queue.pop()
        self._count()
        return self.judge(record) if record is not None else ()

    def finish(self, now: float) -> Sequence[Record]:
        """At stop, judge what is queued for at most ``FINISH_BUDGET`` seconds (enforce
        stops after match, so a finding made now still gets written)."""
        out: list[Record] = []
        deadline = time.monotonic() + FINISH_BUDGET
        while len(self.queue) and time.monotonic() < deadline:
            out.extend(self.tick(now))
        return out

    def _count(self) -> None:
        if len(self.queue) != self._counted:
            self._counted = len(self.queue)
            self.matcher.meter.set(MATCH_QUEUED, self._counted)

    def judge(self, record: Process) -> Sequence[Record]:
        records = self.matcher.judge(record)
        if log.isEnabledFor(logging.DEBUG):
            for r in records:
                what = (
                    r.outcome if isinstance(r, Judged) else f"finding {getattr(r, 'signature', '')}"
                )
                log.debug("verdict %d/%d: %s", record.pid, record.starttime, what)
        return records
