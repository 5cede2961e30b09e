"""Typed configuration: TOML decoded into msgspec Structs, then environment overrides.

Unknown keys, wrong types and impossible values are refused with a message that names the
file (or variable), the key and the reason. The defaults here are the bundled
``config/procsmith.toml``; a test keeps the two equal.

Environment overrides: ``PROCSMITH_<KEY>`` for a top-level key and
``PROCSMITH_<SECTION>__<KEY>`` for a key of a section, e.g. ``PROCSMITH_SCAN__INTERVAL=1s``
(deeper tables likewise: ``PROCSMITH_ENFORCE__PENALTIES__VERY=kill-process``).
A value is read as a TOML value where it is one (``2000``, ``true``, ``["a", "b"]``) and as a
string otherwise (``1s``, ``/host/proc``).
"""

from __future__ import annotations

import importlib.resources
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import msgspec

from stages.penalty import Action
from stages.scripts import DEFAULT_INTERPRETERS

ENV_PREFIX = "PROCSMITH_"
CONFIG_ENV = "PROCSMITH_CONFIG"  # the config file, when no --config names one
# Variables with the prefix that are not config keys.
ENV_NOT_KEYS = frozenset({CONFIG_ENV})

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
ByteCount = Annotated[int, msgspec.Meta(ge=1, le=1 << 34)]


def _bundled_dir() -> Path:
    """Where the bundled ``config/`` is: the package ``pipeline.bundled`` in an install
    (wheel or editable: pyproject.toml maps the folder there), else the source tree's."""
    try:
        return Path(str(importlib.resources.files("pipeline.bundled")))
    except ModuleNotFoundError:  # a checkout run without installing it
        return Path(__file__).resolve().parent.parent / "config"


# The default signatures are there, and relative paths of a config that is only defaults
# are resolved against it.
BUNDLED_CONFIG_DIR = _bundled_dir()


class Duration(float):
    """Seconds, written in config as ``250ms``, ``2s``, ``1.5m`` or a plain number."""

    _FORM: ClassVar[re.Pattern[str]] = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)?")
    _UNIT: ClassVar[dict[str | None, float]] = {
        "ms": 0.001,
        "s": 1.0,
        "m": 60.0,
        "h": 3600.0,
        None: 1.0,
    }

    @classmethod
    def parse(cls, value: object) -> Duration:
        if isinstance(value, bool):
            raise ValueError(f"expected a duration such as '2s', got {value!r}")
        if isinstance(value, int | float):
            seconds = float(value)
        elif isinstance(value, str) and (m := cls._FORM.fullmatch(value.strip())):
            seconds = float(m[1]) * cls._UNIT[m[2]]
        else:
            raise ValueError(f"expected a duration such as '250ms' or '2s', got {value!r}")
        if seconds < 0 or seconds > 86400:
            raise ValueError(f"duration {value!r} is outside 0s to 24h")
        return cls(seconds)


class _Section(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class ScanConfig(_Section, frozen=True):
    interval: Duration = Duration(2.0)
    shards: Annotated[int, msgspec.Meta(ge=1, le=64)] = 2
    cmdline_max_bytes: ByteCount = 256 * 1024
    environ_max_bytes: ByteCount = 1024 * 1024

    def __post_init__(self) -> None:
        if self.interval < 0.05:
            raise ValueError("scan.interval must be at least 50ms")


class TreeConfig(_Section, frozen=True):
    # How long after a round's first shard arrived the others may take; a later shard is
    # left out of that round and counted.
    grace: Duration = Duration(1.0)


class FilterConfig(_Section, frozen=True):
    lru_size: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 2000
    # A process handed to match counts as judged when its verdict comes back. One without a
    # verdict after ack_timeout is offered again, at most max_attempts times in all.
    ack_timeout: Duration = Duration(60.0)
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3


class TransportConfig(_Section, frozen=True):
    # ipc: Unix sockets in run_dir (mode 0700). tcp: stable stages bind bind_host:port and
    # the others connect to hosts[stage] (default: bind_host, or 127.0.0.1 for 0.0.0.0).
    kind: Literal["ipc", "tcp"] = "ipc"
    run_dir: str = ""  # "": /run/procsmith as root, else $XDG_RUNTIME_DIR or /tmp
    bind_host: str = "127.0.0.1"
    base_port: Annotated[int, msgspec.Meta(ge=1, le=65400)] = 5600
    hosts: dict[str, str] = msgspec.field(default_factory=dict)
    # Messages a pipeline socket queues before the sender drops (never blocks).
    hwm: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1000
    # The largest frame a stage accepts; a larger one is refused by ZeroMQ.
    max_message_bytes: ByteCount = 256 * 1024 * 1024
    # How long closing sockets may take to flush, and a stopping stage may drain its input.
    linger: Duration = Duration(1.0)
    drain: Duration = Duration(0.5)
    # How long match waits for room in the next stage's queue before it gives a record up.
    send_timeout: Duration = Duration(2.0)


class SupervisorConfig(_Section, frozen=True):
    metrics_addr: str = "127.0.0.1:9500"
    backoff_initial: Duration = Duration(0.5)
    backoff_max: Duration = Duration(30.0)
    # A stage that dies this many times within crash_window is a crash loop: give up.
    crash_limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 5
    crash_window: Duration = Duration(60.0)
    # How long a stop (SIGTERM) may take before what is left is killed.
    stop_timeout: Duration = Duration(4.0)
    # How often `procsmith run` logs one line of what the node did (0s: never).
    summary_interval: Duration = Duration(60.0)

    def __post_init__(self) -> None:
        parse_addr(self.metrics_addr)  # ValueError names the problem


class MatchConfig(_Section, frozen=True):
    """Signature matching. ``signatures`` are agent-smith JSON or YARA (``.yar``) files; a
    relative path is resolved against the config file's directory by ``load_config``.
    ``delay`` is an artificial pause before each process is judged, for back-pressure tests
    only: leave it at 0."""

    signatures: list[str] = msgspec.field(
        default_factory=lambda: [str(BUNDLED_CONFIG_DIR / "signatures.json")]
    )
    max_exe_bytes: ByteCount = 128 << 20
    cache_size: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1024
    scan_timeout: Duration = Duration(10.0)
    replicas: Annotated[int, msgspec.Meta(ge=1, le=64)] = 2
    delay: Duration = Duration(0.0)
    # Issue 11: interpreters whose script is judged too; per process, how many executable
    # mappings are judged and how many bytes read at most; the level of an unjudgeable file.
    interpreters: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_INTERPRETERS))
    max_mappings: Annotated[int, msgspec.Meta(ge=0, le=65536)] = 256
    max_process_bytes: ByteCount = 512 << 20
    unjudgeable_level: Literal["very", "audit", "barely"] = "barely"

    def __post_init__(self) -> None:
        if not self.signatures:
            raise ValueError("match.signatures must name at least one signature file")
        if self.scan_timeout < 1:
            raise ValueError("match.scan_timeout must be at least 1s (YARA-X counts seconds)")


Penalty = Action  # what enforce does with a finding of a level; "log" only writes it


class PenaltiesConfig(_Section, frozen=True):
    very: Penalty = "log"
    audit: Penalty = "log"
    barely: Penalty = "log"


class EnforceConfig(_Section, frozen=True):
    """Where findings are written ("-" is stdout) and the penalty of each level.
    ``exec`` runs ``exec_command`` (no shell) with the finding's JSON on its stdin."""

    output: list[str] = msgspec.field(default_factory=lambda: ["-"])
    penalties: PenaltiesConfig = msgspec.field(default_factory=PenaltiesConfig)
    exec_command: list[str] = msgspec.field(default_factory=list)
    exec_timeout: Duration = Duration(10.0)

    def __post_init__(self) -> None:
        exec_levels = [
            level
            for level in ("very", "audit", "barely")
            if getattr(self.penalties, level) == "exec"
        ]
        if exec_levels and not self.exec_command:
            raise ValueError(
                f"enforce.penalties.{exec_levels[0]} is exec but enforce.exec_command is empty"
            )
        if self.exec_command and not self.exec_command[0]:
            raise ValueError("enforce.exec_command[0] must name a program")
        if len(set(self.output)) != len(self.output):
            raise ValueError("enforce.output names the same output twice")


class Config(_Section, frozen=True):
    proc_root: str = "/proc"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    scan: ScanConfig = msgspec.field(default_factory=ScanConfig)
    tree: TreeConfig = msgspec.field(default_factory=TreeConfig)
    filter: FilterConfig = msgspec.field(default_factory=FilterConfig)
    match: MatchConfig = msgspec.field(default_factory=MatchConfig)
    enforce: EnforceConfig = msgspec.field(default_factory=EnforceConfig)
    transport: TransportConfig = msgspec.field(default_factory=TransportConfig)
    supervisor: SupervisorConfig = msgspec.field(default_factory=SupervisorConfig)


class ConfigError(Exception):
    """A config that cannot be used; the message names where and why."""


def _decode_hook(type_: type, value: Any) -> Any:
    if type_ is Duration:
        return Duration.parse(value)
    raise NotImplementedError(f"no decoder for {type_!r}")


def _env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> list[str]:
    """Merge PROCSMITH_* variables into ``data``; return the names applied."""
    applied = []
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name in ENV_NOT_KEYS:
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        if not all(path):
            raise ConfigError(f"environment {name}: expected PROCSMITH_<SECTION>__<KEY>")
        target = data
        for part in path[:-1]:
            section = target.setdefault(part, {})
            if not isinstance(section, dict):
                raise ConfigError(f"environment {name}: {part!r} is not a section")
            target = section
        target[path[-1]] = _env_value(raw)
        applied.append(name)
    return applied


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (or only defaults when ``None``) and apply environment overrides."""
    source = str(path) if path is not None else "defaults"
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: not valid TOML: {err}") from None
    applied = _apply_env(data, environ or {})
    if applied:
        source += " with " + ", ".join(applied)
    try:
        config = msgspec.convert(data, Config, dec_hook=_decode_hook, strict=not applied)
    except msgspec.ValidationError as err:
        raise ConfigError(f"{source}: {err}") from None
    base = Path(os.path.abspath(path)).parent if path is not None else BUNDLED_CONFIG_DIR
    return _resolve_signature_paths(config, base)


def load_named_config(name: str | None, environ: Mapping[str, str]) -> Config:
    """The config a command was given: ``--config FILE``, else ``$PROCSMITH_CONFIG``, else
    the defaults; then the environment's overrides."""
    path = name or environ.get(CONFIG_ENV)
    return load_config(Path(path) if path else None, environ)


def _resolve_signature_paths(config: Config, base: Path) -> Config:
    """Signature paths relative to the config file's directory made absolute."""
    signatures = [str(base / p) if not os.path.isabs(p) else p for p in config.match.signatures]
    match = msgspec.structs.replace(config.match, signatures=signatures)
    return msgspec.structs.replace(config, match=match)


def parse_addr(addr: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too); raises ValueError naming the problem."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {addr!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def bundled_config_path() -> Path:
    """``config/procsmith.toml`` of the source tree this package runs from."""
    return BUNDLED_CONFIG_DIR / "procsmith.toml"
