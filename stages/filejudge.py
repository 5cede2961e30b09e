"""One file a process runs, judged by the file rules for the match stage (issue 11).

    files = FileJudge(signatures, meter, max_exe_bytes=..., cache_size=..., unjudgeable_level=...)
    files.budget = max_process_bytes  # before each process
    ident, problem = files.judge(target, view, found)  # its hits appended to found

A file is opened by the first of its ``Target.openers`` that opens (``stages.judgeview``) and
read in windows (``stages.signatures.exefile``). A file's verdict is cached by (device,
inode, size, ctime), so many processes of one binary cost one scan and a file rewritten in
place is scanned again. A file root cannot read (EACCES: a FUSE mount) or that vanished while
the process runs is judged an ``unjudgeable`` hit, at its own level, unless the process is
exiting (its files go as it exits).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import NamedTuple

from stages.base.catalog import (
    MATCH_CACHE,
    MATCH_EXE_SCANS,
    MATCH_EXE_TRUNCATED,
    MATCH_FILES,
    MATCH_FILES_CUT,
)
from stages.base.meter import Meter
from stages.base.schema import Level
from stages.judgeview import Target, exiting
from stages.signatures import (
    Hit,
    Identity,
    SignatureSet,
    Unjudgeable,
    most_severe_first,
)
from stages.signatures.exefile import open_regular, read_windows, tail_window
from stages.signatures.model import CLASSIFIER_UNJUDGEABLE

# Reasons a file could not be read that say something about the process, not about us.
_SIGNALS = frozenset({"denied", "vanished"})


class Verdict(NamedTuple):
    """What the signatures said of one file; ``problem`` when they could not say."""

    hits: tuple[Hit, ...]
    problem: str | None = None


class Found(NamedTuple):
    """A hit and the file it came from (``role``: exe, mapping, script, cmdline, exe-path)."""

    hit: Hit
    role: str
    file: str


class FileJudge:
    """Judges files; keeps an LRU of file verdicts.

    ``budget`` is the bytes the process being judged may still have read: a file that would
    take more is not read (counted); verdicts already cached cost no bytes.
    """

    def __init__(
        self,
        signatures: SignatureSet,
        meter: Meter,
        *,
        max_exe_bytes: int,
        cache_size: int,
        unjudgeable_level: Level,
    ) -> None:
        self.signatures = signatures
        self.meter = meter
        self.max_exe_bytes = max_exe_bytes
        self.cache_size = cache_size
        self.unjudgeable_level = unjudgeable_level
        self.budget = 0  # bytes this process may still have read
        self._verdicts: OrderedDict[Identity, Verdict] = OrderedDict()
        self._window_bytes = max_exe_bytes + tail_window(max_exe_bytes)  # most read of a file

    def judge(
        self, target: Target, view: str, found: list[Found], missing_ok: bool = False
    ) -> tuple[tuple[int, int], str | None]:
        """Judge one file into ``found``; returns its (device, inode) ((0, 0) if it was not
        opened) and why it could not be judged."""
        verdict, ident = self.verdict(target)
        self.meter.inc(MATCH_FILES, role=target.role)
        found += [Found(h, target.role, target.shown) for h in verdict.hits]
        problem = verdict.problem
        if problem in _SIGNALS and not (missing_ok and problem == "vanished"):  # noqa: SIM102
            if not exiting(view):  # its files go as it exits: that says nothing
                found.append(Found(self.unjudgeable(problem), target.role, target.shown))
        return ident, problem

    def verdict(self, target: Target) -> tuple[Verdict, tuple[int, int]]:
        problem = "vanished"
        for opener in target.openers:
            try:
                fd, identity = open_regular(opener)
                break
            except Unjudgeable as err:
                problem = err.reason
        else:
            return Verdict((), problem), (0, 0)
        ident = (identity.dev, identity.ino)
        try:
            cached = self._verdicts.get(identity)
            if cached is not None:
                self._verdicts.move_to_end(identity)
                self.meter.inc(MATCH_CACHE, result="hit")
                return cached, ident
            if min(identity.size, self._window_bytes) > self.budget:
                self.meter.inc(MATCH_FILES_CUT, reason="bytes")
                return Verdict(()), ident
            self.meter.inc(MATCH_CACHE, result="miss")
            verdict = self._scan(fd, identity)
        finally:
            os.close(fd)
        if verdict.problem in (None, "timeout"):
            # A timeout is remembered too: 500 copies of a hostile binary cost one timeout.
            self._remember(identity, verdict)
        return verdict, ident

    def unjudgeable(self, reason: str) -> Hit:
        return Hit(f"unjudgeable-{reason}", self.unjudgeable_level, CLASSIFIER_UNJUDGEABLE)

    def _scan(self, fd: int, identity: Identity) -> Verdict:
        try:
            windows, truncated = read_windows(fd, identity.size, self.max_exe_bytes)
            self.budget -= sum(len(w) for w in windows)
            if len(windows) > 1 or truncated:
                self.meter.inc(MATCH_EXE_TRUNCATED)
            self.meter.inc(MATCH_EXE_SCANS)
            hits = [h for w in windows for h in self.signatures.judge_bytes(w)]
            return Verdict(tuple(most_severe_first(list(dict.fromkeys(hits)))))
        except Unjudgeable as err:
            return Verdict((), err.reason)

    def _remember(self, identity: Identity, verdict: Verdict) -> None:
        self._verdicts[identity] = verdict
        if len(self._verdicts) > self.cache_size:
            self._verdicts.popitem(last=False)
