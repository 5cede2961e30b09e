"""The enforce stage's logic: write each finding as a JSON line and apply its penalty.

    enforcer = Enforcer(meter, "/proc", outputs=["-"], penalties={"very": "kill-process"})
    published = enforcer.handle(finding)  # [finding], for the tap
    enforcer.close()

The penalties per level, and the procfs confirmation each waits for, are in
``stages.penalise``; a finding whose target is not confirmed is still written out.

A finding is acknowledged (its ``Judged`` emitted) only once it is written whole to every
output. One that cannot be written yet is held in a bounded backlog and retried every
``retry_interval``; the backlog and each failing output are gauges the supervisor's health
check reads. What is still held when enforce stops goes to stderr as a last resort and makes
the stage fail (``failure``), so ``procsmith run`` exits 1 instead of losing it silently.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from stages.base.catalog import (
    ENFORCE_BACKLOG,
    ENFORCE_BACKLOG_REFUSED,
    ENFORCE_OUTPUT_FAILING,
    ENFORCE_WRITE_ERRORS,
)
from stages.base.contract import Stage
from stages.base.meter import Meter
from stages.base.render import finding_line
from stages.base.schema import Finding, Judged, Record
from stages.outputs import STDOUT, FileOutput, Output, StreamOutput, WriteFailed
from stages.penalise import Penaliser
from stages.penalty import Action

log = logging.getLogger("procsmith.enforce")


class OutputUnavailable(Exception):
    """An output file that cannot be opened; the message names it."""


@dataclass
class _Held:
    """A finding not yet written to every output: its line and the outputs still owed it."""

    finding: Finding
    line: bytes
    owed: list[int]


class Enforcer:
    """Writes findings to ``outputs`` and applies ``penalties`` (level → action; a level not
    named is ``log``); ``close`` the files.

    ``"-"`` in ``outputs`` writes to ``stdout`` (the process's stdout by default); the
    ``exec`` action runs ``exec_command`` for at most ``exec_timeout`` seconds. ``fsync``
    makes each line durable before it counts as written; at most ``backlog`` findings wait
    for a failing output (one more is left unacknowledged, so the filter offers it again).
    """

    def __init__(
        self,
        meter: Meter,
        proc_root: str,
        *,
        outputs: Sequence[str] = (STDOUT,),
        penalties: Mapping[str, Action] | None = None,
        exec_command: Sequence[str] = (),
        exec_timeout: float = 10.0,
        stdout: BinaryIO | None = None,
        cgroup_root: str = "",
        fsync: bool = True,
        backlog: int = 10_000,
        retry_interval: float = 1.0,
    ) -> None:
        self.meter = meter
        self.penaliser = Penaliser(
            meter,
            proc_root,
            penalties=penalties,
            exec_command=exec_command,
            exec_timeout=exec_timeout,
            cgroup_root=cgroup_root,
        )
        self.backlog_max = backlog
        self.retry_interval = retry_interval
        self.held: dict[tuple[int, int], _Held] = {}  # by (pid, starttime), oldest first
        self.failing: dict[str, str] = {}  # output → why its last write failed
        self.next_retry = 0.0
        self.lost = 0  # findings still held when enforce stopped
        self._counted = 0  # the backlog as last reported
        self.outputs: list[Output] = []
        for name in outputs:
            if name == STDOUT:
                self.outputs.append(
                    StreamOutput(stdout if stdout is not None else sys.stdout.buffer)
                )
                continue
            out = FileOutput(name, fsync=fsync)
            try:
                out.check()
            except OSError as err:
                raise OutputUnavailable(f"cannot open {name}: {err.strerror}") from None
            self.outputs.append(out)

    def handle(self, finding: Finding, now: float = 0.0) -> list[Record]:
        """Apply ``finding``'s penalty and write it out; returns the finding (for the tap)
        and, once it is written everywhere, the verdict that completes its handover."""
        line = finding_line(finding)
        self.penaliser.apply(finding, line)
        key = (finding.process.pid, finding.process.starttime)
        held = self.held.get(key)
        if held is None:
            held = _Held(finding, line, list(range(len(self.outputs))))
        if not self._write(held):
            if key not in self.held and len(self.held) >= self.backlog_max:
                self.meter.inc(ENFORCE_BACKLOG_REFUSED)
            else:
                self.held[key] = held
                self.next_retry = now + self.retry_interval
            self._count_held()
            return [finding]
        self.held.pop(key, None)
        self._count_held()
        return [finding, Judged(held.finding.process, "finding")]

    def retry(self, now: float) -> list[Record]:
        """Write what is held; returns the verdicts of the findings now written everywhere."""
        done: list[Record] = []
        for key, held in list(self.held.items()):
            if self._write(held):
                del self.held[key]
                done.append(Judged(held.finding.process, "finding"))
            elif len(held.owed) == len(self.outputs):
                break  # nothing gets out: the rest would fail the same way
        self.next_retry = now + self.retry_interval
        self._count_held()
        return done

    def _count_held(self) -> None:
        if len(self.held) != self._counted:
            self._counted = len(self.held)
            self.meter.set(ENFORCE_BACKLOG, self._counted)

    def _write(self, held: _Held) -> bool:
        """Write ``held``'s line to the outputs still owed it; True once none is."""
        still: list[int] = []
        for i in held.owed:
            out = self.outputs[i]
            try:
                out.write(held.line)
            except WriteFailed as err:
                self.meter.inc(ENFORCE_WRITE_ERRORS)
                self._mark(out.name, err.reason)
                still.append(i)
            else:
                self._mark(out.name, None)
        held.owed = still
        return not still

    def _mark(self, output: str, reason: str | None) -> None:
        before = self.failing.get(output)
        if before == reason:
            return
        if before is not None:
            self.meter.set(ENFORCE_OUTPUT_FAILING, 0, output=output, reason=before)
        if reason is None:
            del self.failing[output]
            log.info("writing findings to %s again", output)
        else:
            self.failing[output] = reason
            self.meter.set(ENFORCE_OUTPUT_FAILING, 1, output=output, reason=reason)
            log.error("cannot write findings to %s (%s); holding them", output, reason)

    def give_up(self) -> None:
        """At stop: what is still held goes to stderr, the last place left, and is counted."""
        self.lost = len(self.held)
        if self.lost:
            log.error("stopping with %d findings not written out; they follow", self.lost)
            for held in self.held.values():
                with contextlib.suppress(OSError, ValueError):
                    sys.stderr.buffer.write(held.line)
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.buffer.flush()
            self.held.clear()

    def close(self) -> None:
        pass  # no file is held open between findings


class EnforceStage(Stage):
    """The runner's face of an Enforcer: the pipeline's sink."""

    accepts = (Finding,)

    def __init__(self, enforcer: Enforcer) -> None:
        self.enforcer = enforcer

    def handle(self, record: Record, now: float) -> Sequence[Record]:
        assert isinstance(record, Finding)  # noqa: S101 - the runner checks `accepts`
        return self.enforcer.handle(record, now)

    def next_tick(self, now: float) -> float | None:
        return self.enforcer.next_retry if self.enforcer.held else None

    def tick(self, now: float) -> Sequence[Record]:
        return self.enforcer.retry(now)

    def finish(self, now: float) -> Sequence[Record]:
        done = self.enforcer.retry(now) if self.enforcer.held else []
        self.enforcer.give_up()
        return done

    def failure(self) -> str | None:
        lost = self.enforcer.lost
        return f"{lost} findings could not be written out" if lost else None

    def close(self) -> None:
        self.enforcer.close()
