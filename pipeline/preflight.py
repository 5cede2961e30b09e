"""What a stage would otherwise find out only after it started, checked before anything starts.

A bad signature file, an enforce output that cannot be opened, an exec penalty whose program
does not exist, a run directory others can get into (or reached through a symlink), or tcp
without CURVE keys (unless ``transport.insecure``) is refused with a message naming the
file and the reason (exit code 2), instead of a stage process dying at start and the
supervisor taking that for a crash loop. The signatures are compiled here, once: forked match
processes inherit the compiled rules, so replicas share them and a restart recompiles nothing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from pipeline.config import ConfigError
from pipeline.configschema import Config
from pipeline.rundir import RunDirError, open_private_dir
from pipeline.security import Security, load_security
from pipeline.transport import run_dir_of
from stages.procevents import Unavailable, subscribe
from stages.signatures import SignatureError, SignatureSet, load_signatures


class Prepared(NamedTuple):
    """What the checks produced that the stages use."""

    signatures: SignatureSet | None = None
    # The CURVE keys of the processes checked for (none over ipc, or tcp with insecure).
    security: Security = Security()


def preflight(config: Config, stages: Iterable[str]) -> Prepared:
    """Check what ``stages`` need; raises ConfigError naming what is wrong."""
    stages = set(stages)
    if config.transport.kind == "ipc":
        # Created if missing; refused if it is a symlink (anywhere in its path), not this
        # user's, or not mode 0700. Each process opens and checks it again for its own use.
        try:
            open_private_dir(run_dir_of(config.transport)).close()
        except RunDirError as err:
            raise ConfigError(f"transport.run_dir: {err}") from None
    security = load_security(config.transport, stages)
    if "enforce" in stages:
        _check_enforce(config)
    if "events" in stages and config.events.mode == "events":
        _check_events()
    signatures = None
    if "match" in stages:
        try:
            signatures = load_signatures([Path(p) for p in config.match.signatures])
        except SignatureError as err:
            raise ConfigError(f"match.signatures: {err}") from None
    return Prepared(signatures, security)


def _check_events() -> None:
    """events.mode "events" promises events: a node that cannot have them is refused."""
    probe = subscribe(timeout=2.0)
    if isinstance(probe, Unavailable):
        raise ConfigError(
            f"events.mode is events, but process events are unavailable here: {probe.detail}"
        )
    probe.close()


def _check_enforce(config: Config) -> None:
    for name in config.enforce.output:
        if name == "-":
            continue
        try:
            with open(name, "ab"):
                pass
        except OSError as err:
            raise ConfigError(f"enforce.output: cannot open {name}: {err.strerror}") from None
    levels = config.enforce.penalties
    if "exec" in (levels.very, levels.audit, levels.barely):
        program = config.enforce.exec_command[0]
        found = shutil.which(program) if os.sep not in program else program
        if found is None or not os.access(found, os.X_OK):
            raise ConfigError(f"enforce.exec_command: {program!r} is not an executable program")
