"""The match stage's logic: judge a new process by what it runs and its command line.

    matcher = Matcher(load_signatures(paths), meter, max_exe_bytes=..., cache_size=...)
    records = matcher.judge(proc)  # [Judged], or [Finding] (enforce acknowledges it)

What a process runs (issue 11, ``stages.judgeview``): its executable, its file-backed
executable mappings (a program run by the dynamic loader, an ``LD_PRELOAD`` library, a
``dlopen``ed memfd) and, for an interpreter, the script its argv names — each read through
the process's own view and judged by the file rules (``stages.filejudge``, which caches each
file's verdict). Command-line rules see the whole argv (in windows, up to the kernel's
limit) and the executable's resolved path. A file root cannot read (EACCES: a FUSE mount) or
that vanished while the process runs is an ``unjudgeable`` finding, at its own level.

Before anything is reported the pid's starttime is read again: a pid that now names another
process (``reused``) or none (``vanished``) gets no finding — unless the record names the
executable pinned at its exec (``Process.pin``, from the events stage): then a process that
has exited, or whose executable cannot be opened any more, is judged through the pin (its
executable and its command line), once the pinned file is shown to be the one the record
names (device and inode).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Collection, Sequence
from datetime import UTC, datetime

import msgspec

from stages.base.catalog import (
    MATCH_FILES_CUT,
    MATCH_FINDINGS,
    MATCH_PINNED,
    MATCH_QUEUE_REFUSED,
    MATCH_QUEUED,
    MATCH_SKIPPED,
    MATCH_UNJUDGEABLE,
)
from stages.base.contract import Stage
from stages.base.meter import Meter
from stages.base.schema import Finding, Judged, Level, Process, Record
from stages.fairqueue import FairQueue
from stages.filejudge import FileJudge, Found
from stages.judgeview import (
    Target,
    argv_windows,
    is_kernel_thread,
    mapping_targets,
    process_view,
    read_argv,
    script_target,
)
from stages.pidcheck import still_same
from stages.scripts import DEFAULT_INTERPRETERS, script_of
from stages.signatures import SignatureSet
from stages.signatures.model import CLASSIFIER_UNJUDGEABLE, rank

log = logging.getLogger("procsmith.match")

FINISH_BUDGET = 0.5  # seconds a stopping match spends on what it still has queued
# What a pin looks like: a descriptor of the events stage, /proc/<holder pid>/fd/<n>.
_PIN_FORM = re.compile(r"/.+/\d+/fd/\d+")

# Why a process could not be judged, as the Judged outcome says it.
_OUTCOME_OF_PROBLEM = {"denied": "denied", "kernel": "kernel", "vanished": "vanished"}


class Matcher:
    """Judges processes; keeps an LRU of file verdicts (``files``).

    ``delay`` (seconds) is an artificial pause before each process, for back-pressure tests.
    Per process at most ``max_mappings`` mappings are judged and ``max_process_bytes`` read
    (verdicts already cached cost no bytes); what is left is counted.
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
        interpreters: Collection[str] = DEFAULT_INTERPRETERS,
        max_mappings: int = 256,
        max_process_bytes: int = 512 << 20,
        unjudgeable_level: Level = Level.BARELY,
    ) -> None:
        if cache_size < 1 or max_exe_bytes < 1 or max_mappings < 0 or max_process_bytes < 1:
            raise ValueError("cache_size, max_exe_bytes and max_process_bytes must be at least 1")
        self.signatures = signatures
        self.signatures.set_timeout(scan_timeout)
        self.meter = meter
        self.files = FileJudge(
            signatures,
            meter,
            max_exe_bytes=max_exe_bytes,
            cache_size=cache_size,
            unjudgeable_level=unjudgeable_level,
        )
        self.delay = delay
        self.interpreters = frozenset(interpreters)
        self.max_mappings = max_mappings
        self.max_process_bytes = max_process_bytes
        self._maps_id = 0  # the digest of the maps read judging this process (0: none read)

    def judge(self, proc: Process) -> list[Record]:
        if self.delay > 0:
            time.sleep(self.delay)
        base = os.path.dirname(proc.path) + "/"
        found, problem = self._judge_process(proc, base)
        gone = still_same(os.path.dirname(proc.path), proc.starttime)
        if proc.pin and (gone is not None or problem == "vanished"):
            pinned = self._judge_pinned(proc)
            if pinned is not None:
                # The file the process ran, whatever its pid names now: a verdict on it.
                found = [*pinned, *self._argv_hits(proc.cmdline, "cmdline", "")]
                gone = problem = None
                self._maps_id = 0  # its pid's maps, if read, may be another process's
        if gone is not None:
            # Nothing is said of a pid that may now be someone else.
            self.meter.inc(MATCH_SKIPPED, reason=gone)
            return [Judged(proc, gone if gone in ("vanished", "reused") else "error")]
        if problem is not None:
            self.meter.inc(MATCH_SKIPPED, reason=problem)
        if self._maps_id and self._maps_id != proc.maps_id:
            # Answered with the maps judged: the filter counts them as judged (the record's
            # own digest is older, or 0 when the scan had not read them yet).
            proc = msgspec.structs.replace(proc, maps_id=self._maps_id)
        ranked = sorted(found, key=lambda f: rank(f.hit))  # stable: exe before mappings
        if ranked:
            top = ranked[0]
            hit = top.hit
            if hit.classifier == CLASSIFIER_UNJUDGEABLE:
                self.meter.inc(MATCH_UNJUDGEABLE, role=top.role, reason=hit.signature)
            self.meter.inc(MATCH_FINDINGS, level=hit.level, classifier=hit.classifier)
            finding = Finding(
                proc,
                hit.signature,
                hit.level,
                hit.classifier,
                datetime.now(UTC),
                top.file,
                top.role,
            )
            # No verdict from here: enforce sends it once the finding is written out, so a
            # finding lost with enforce leaves its process unacknowledged, to be offered again.
            return [finding]
        outcome = "clean" if problem is None else _OUTCOME_OF_PROBLEM.get(problem, "error")
        return [Judged(proc, outcome)]

    def _judge_pinned(self, proc: Process) -> list[Found] | None:
        """What the pinned executable holds, or ``None`` (counted) when the pin cannot be
        opened or holds another file than the record's (its descriptor number was reused)."""
        if not _PIN_FORM.fullmatch(proc.pin):
            self.meter.inc(MATCH_PINNED, result="unreadable")
            return None
        verdict, ident = self.files.verdict(Target("exe", proc.pin, (proc.pin,)))
        if ident not in ((0, 0), (proc.exe_dev, proc.exe_ino)):
            self.meter.inc(MATCH_PINNED, result="mismatch")
            return None
        if ident == (0, 0) or verdict.problem not in (None, "timeout"):
            self.meter.inc(MATCH_PINNED, result="unreadable")
            return None
        self.meter.inc(MATCH_PINNED, result="judged")
        return [Found(h, "exe", proc.pin) for h in verdict.hits]

    def _judge_process(self, proc: Process, base: str) -> tuple[list[Found], str | None]:
        """Everything found in what the process runs, and why part of it was not judged."""
        self.files.budget = self.max_process_bytes
        self._maps_id = 0
        if is_kernel_thread(proc.flags):
            return [], "kernel"
        view, exe_path, problem = process_view(base, proc.pid)
        if problem == "no_exe":  # it runs, and what it runs cannot be told: vanished
            return [Found(self.files.unjudgeable("vanished"), "exe", "")], None
        if view is None:
            return [], problem
        found: list[Found] = []
        exe: tuple[int, int] = (0, 0)
        if exe_path is not None:
            target = Target("exe", exe_path, (view + "exe",))
            exe, problem = self.files.judge(target, view, found)
            found += self._argv_hits([exe_path], "exe-path", exe_path)
        argv = proc.cmdline
        if not argv and view != base:
            argv = read_argv(view)  # a zombie leader's record has none: its thread's
        found += self._argv_hits(argv, "cmdline", "")
        covered = len("\0".join(argv).encode("utf-8", "surrogatepass")) + 1 if argv else 0
        if proc.argv_bytes > covered:  # the record's argv was cut: the rest, in windows
            for window in argv_windows(view + "cmdline", covered):
                found += self._argv_hits(window, "cmdline", "")
        self._judge_mappings(view, exe, found)
        script = script_of(argv, exe_path or "", self.interpreters)
        if script is not None and script.code is not None:
            data = script.code.encode("utf-8", "surrogatepass")
            hits = self.signatures.judge_bytes(data) if data else []
            found += [Found(h, "script", f"<{script.path}>") for h in hits]
        elif script is not None:
            self.files.judge(script_target(view, script), view, found, missing_ok=True)
        return found, problem

    def _judge_mappings(self, view: str, exe: tuple[int, int], found: list[Found]) -> None:
        try:
            targets, cut, _, self._maps_id = mapping_targets(view, exe, self.max_mappings)
        except OSError:
            return  # no maps to read (gone, or a fake tree): the exe was what there was
        if cut:
            self.meter.inc(MATCH_FILES_CUT, cut, reason="count")
        for target in targets:
            self.files.judge(target, view, found, missing_ok=True)

    def _argv_hits(self, argv: list[str], role: str, file: str) -> list[Found]:
        return [Found(h, role, file) for h in self.signatures.judge_argv(argv)]


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
