"""The enforce stage's logic: write each finding as a JSON line and apply its penalty.

    enforcer = Enforcer(meter, "/proc", outputs=["-"], penalties={"very": "kill-process"})
    published = enforcer.handle(finding)  # [finding], for the tap
    enforcer.close()

Penalties per level, from config: ``log`` (only write it: the default, so nothing is killed
unless configured), ``kill-process`` (SIGKILL the process), ``kill-workspace`` (SIGKILL the
workspace's supervisor; for a cgroup workspace every process of the container, see
``stages.cgroupkill``), ``exec`` (run ``exec_command``, the finding's JSON on its stdin).
A kill is sent through a pidfd once the target is confirmed (see ``stages.penalty``).

No penalty is applied on the finding's word alone: right before it, procfs is asked whether
the target (the pid with the finding's starttime) is still inside the finding's workspace,
by the workspace provider's rule (``stages.verify``; for a kill, after the pidfd is held).
A finding it does not confirm — forged, stale, or about a process outside any workspace —
is still written out, but nothing is done to any process: the refusal is counted
(``procsmith_enforce_penalties_refused_total{reason}``) and logged.
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
    ENFORCE_PENALTIES,
    ENFORCE_PENALTIES_REFUSED,
    ENFORCE_PENALTY_FAILURES,
    ENFORCE_WRITE_ERRORS,
)
from stages.base.contract import Stage
from stages.base.meter import Meter
from stages.base.render import finding_line
from stages.base.schema import Finding, Judged, Record
from stages.cgroupkill import kill_container, mount_map
from stages.outputs import STDOUT, FileOutput, Output, StreamOutput, WriteFailed
from stages.penalty import (
    Action,
    Confirm,
    PenaltyFailed,
    kill_confirmed,
    run_command,
    same_starttime,
    started_by,
)
from stages.verify import DEFAULT_PROVIDER, rule_for

log = logging.getLogger("procsmith.enforce")
_LOG_EVERY = 1000  # of refused penalties, log the first and every 1000th: a flood stays small


class PenaltyRefused(Exception):
    """procfs did not confirm the finding: ``reason`` is one of ``stages.verify.REASONS``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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
        self._refused = 0
        self.proc_root = proc_root
        self.penalties = dict(penalties or {})
        self.exec_command = list(exec_command)
        self.exec_timeout = exec_timeout
        self.cgroup_root = cgroup_root
        self._mounts: dict[str, str] | None = None  # read at the first cgroup kill
        if "exec" in self.penalties.values() and not self.exec_command:
            raise ValueError("the exec penalty needs a command")
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
        action = self.penalties.get(finding.level, "log")
        if action != "log":
            self._penalise(action, finding, line)
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

    def _confirmed(self, finding: Finding, first: Confirm) -> Confirm:
        """``first``, then the provider's rule: the finding's process is in its workspace."""

        def confirm(starttime_now: int) -> str | None:
            problem = first(starttime_now)
            if problem is not None:
                return problem
            self._verify(finding)
            return None

        return confirm

    def _verify(self, finding: Finding) -> None:
        proc = finding.process
        # The rule of the finding's own provider: a record cannot pick a laxer one, since
        # a provider without a rule refuses everything.
        provider = DEFAULT_PROVIDER if proc.workspace is None else proc.workspace.provider
        refused = rule_for(provider)(self.proc_root, proc.pid, proc.starttime, proc.workspace)
        if refused is not None:
            raise PenaltyRefused(refused)

    def _penalise(self, action: Action, finding: Finding, line: bytes) -> None:
        proc = finding.process
        try:
            if action == "kill-process":
                confirm = self._confirmed(finding, same_starttime(proc.starttime))
                kill_confirmed(self.proc_root, proc.pid, confirm)
            elif action == "kill-workspace":
                self._kill_workspace(finding)
            elif action == "exec":
                self._verify(finding)
                run_command(self.exec_command, line, self.exec_timeout)
            else:
                raise ValueError(f"unknown penalty {action!r}")
        except PenaltyRefused as err:
            self.meter.inc(ENFORCE_PENALTIES, action=action, result="refused")
            self.meter.inc(ENFORCE_PENALTIES_REFUSED, reason=err.reason)
            if self._refused % _LOG_EVERY == 0:
                ws = proc.workspace
                log.warning(
                    "refused %s for pid %d (starttime %d, workspace %s): %s (%d refused so far)",
                    action,
                    proc.pid,
                    proc.starttime,
                    "none" if ws is None else f"{ws.workspace_id!r} supervisor {ws.pid}",
                    err.reason,
                    self._refused + 1,
                )
            self._refused += 1
            return
        except PenaltyFailed as err:
            self.meter.inc(ENFORCE_PENALTIES, action=action, result="failed")
            self.meter.inc(ENFORCE_PENALTY_FAILURES, action=action, reason=err.reason)
            return
        self.meter.inc(ENFORCE_PENALTIES, action=action, result="ok")

    def _kill_workspace(self, finding: Finding) -> None:
        proc, ws = finding.process, finding.process.workspace
        if ws is None:
            raise PenaltyFailed("no_workspace")
        if ws.provider == "cgroup":
            if self._mounts is None:
                self._mounts = mount_map(self.proc_root, self.cgroup_root)
            # kill_container applies the cgroup rule (stages.verify_cgroup) itself, right
            # before the kill; what it does not confirm is a failure with its reason.
            kill_container(self.proc_root, self._mounts, proc.pid, proc.starttime, ws)
        else:
            confirm = self._confirmed(finding, started_by(proc.starttime))
            kill_confirmed(self.proc_root, ws.pid, confirm)

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
