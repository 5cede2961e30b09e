"""The enforce stage's penalties: what a finding's level calls for, applied once confirmed.

    penaliser = Penaliser(meter, "/proc", penalties={"very": "kill-process"})
    penaliser.apply(finding, finding_line(finding))

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
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from stages.base.catalog import (
    ENFORCE_PENALTIES,
    ENFORCE_PENALTIES_REFUSED,
    ENFORCE_PENALTY_FAILURES,
)
from stages.base.meter import Meter
from stages.base.schema import Finding
from stages.cgroupkill import kill_container, mount_map
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

log = logging.getLogger("procsmith.enforce")  # enforce's: a refusal is logged as the stage's
_LOG_EVERY = 1000  # of refused penalties, log the first and every 1000th: a flood stays small


class PenaltyRefused(Exception):
    """procfs did not confirm the finding: ``reason`` is one of ``stages.verify.REASONS``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Penaliser:
    """Applies ``penalties`` (level → action; a level not named is ``log``); the ``exec``
    action runs ``exec_command`` for at most ``exec_timeout`` seconds."""

    def __init__(
        self,
        meter: Meter,
        proc_root: str,
        *,
        penalties: Mapping[str, Action] | None = None,
        exec_command: Sequence[str] = (),
        exec_timeout: float = 10.0,
        cgroup_root: str = "",
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

    def apply(self, finding: Finding, line: bytes) -> None:
        """Apply ``finding``'s penalty (``line``: its JSON line, for ``exec``); a refusal or
        a failure is counted and logged, not raised."""
        action = self.penalties.get(finding.level, "log")
        if action != "log":
            self._penalise(action, finding, line)

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
