"""The enforce stage's logic: write each finding as a JSON line and apply its penalty.

    enforcer = Enforcer(config.enforce, meter, config.proc_root)
    published = enforcer.handle(finding)  # [finding], for the tap
    enforcer.close()

Penalties per level, from config: ``log`` (only write it: the default, so nothing is killed
unless configured), ``kill-process`` (SIGKILL the process), ``kill-workspace`` (SIGKILL the
workspace's supervisor), ``exec`` (run ``exec_command``, the finding's JSON on its stdin).
A kill is sent through a pidfd once the target is confirmed (see ``stages.penalty``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import BinaryIO

from pipeline.catalog import ENFORCE_PENALTIES, ENFORCE_PENALTY_FAILURES, ENFORCE_WRITE_ERRORS
from pipeline.config import Config, ConfigError, EnforceConfig
from pipeline.meter import Meter
from pipeline.render import finding_line
from pipeline.schema import Finding, Judged, Record
from pipeline.stage import Stage
from stages.penalty import (
    PenaltyFailed,
    kill_confirmed,
    run_command,
    same_starttime,
    started_by,
)

STDOUT = "-"


class Enforcer:
    """Writes findings to the configured outputs and applies penalties; ``close`` the files.

    ``stdout`` is where ``"-"`` writes (the process's stdout by default).
    """

    def __init__(
        self,
        config: EnforceConfig,
        meter: Meter,
        proc_root: str,
        *,
        stdout: BinaryIO | None = None,
    ) -> None:
        self.config = config
        self.meter = meter
        self.proc_root = proc_root
        self.outputs: list[BinaryIO] = []
        self._owned: list[BinaryIO] = []
        for name in config.output:
            if name == STDOUT:
                self.outputs.append(stdout if stdout is not None else sys.stdout.buffer)
                continue
            try:
                f = open(name, "ab")  # noqa: SIM115 - kept open until close()
            except OSError as err:
                self.close()
                raise ConfigError(f"enforce.output: cannot open {name}: {err.strerror}") from None
            self.outputs.append(f)
            self._owned.append(f)

    def handle(self, finding: Finding) -> list[Record]:
        """Write ``finding`` out and apply its penalty; returns the finding (for the tap) and
        the verdict that completes its process's handover."""
        line = finding_line(finding)
        for out in self.outputs:
            try:
                out.write(line)
                out.flush()
            except (OSError, ValueError):  # ValueError: written after close
                self.meter.inc(ENFORCE_WRITE_ERRORS)
        action = getattr(self.config.penalties, finding.level)
        if action != "log":
            self._penalise(action, finding, line)
        return [finding, Judged(finding.process, "finding")]

    def _penalise(self, action: str, finding: Finding, line: bytes) -> None:
        try:
            if action == "kill-process":
                proc = finding.process
                kill_confirmed(self.proc_root, proc.pid, same_starttime(proc.starttime))
            elif action == "kill-workspace":
                if finding.process.workspace is None:
                    raise PenaltyFailed("no_workspace")
                supervisor = finding.process.workspace.pid
                kill_confirmed(self.proc_root, supervisor, started_by(finding.process.starttime))
            elif action == "exec":
                run_command(self.config.exec_command, line, self.config.exec_timeout)
            else:
                raise ValueError(f"unknown penalty {action!r}")
        except PenaltyFailed as err:
            self.meter.inc(ENFORCE_PENALTIES, action=action, result="failed")
            self.meter.inc(ENFORCE_PENALTY_FAILURES, action=action, reason=err.reason)
            return
        self.meter.inc(ENFORCE_PENALTIES, action=action, result="ok")

    def close(self) -> None:
        for f in self._owned:
            f.close()
        self._owned.clear()


class EnforceStage(Stage):
    """The runner's face of an Enforcer: the pipeline's sink."""

    accepts = (Finding,)

    def __init__(self, config: Config, meter: Meter) -> None:
        self.enforcer = Enforcer(config.enforce, meter, config.proc_root)

    def handle(self, record: Record, now: float) -> Sequence[Record]:
        assert isinstance(record, Finding)  # noqa: S101 - the runner checks `accepts`
        return self.enforcer.handle(record)

    def close(self) -> None:
        self.enforcer.close()
