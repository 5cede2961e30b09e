"""The config's schema: each section a msgspec Struct whose fields are its keys, with their
types, defaults and limits; unknown keys are refused, and ``__post_init__`` checks what one
key's value needs of another's. ``pipeline.config`` loads a file into ``Config``.

The defaults here are the bundled ``config/procsmith.toml``; a test keeps the two equal.
"""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from pipeline.configvalues import Duration, parse_addr
from stages.penalty import Action
from stages.scripts import DEFAULT_INTERPRETERS

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


class _Section(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class ScanConfig(_Section, frozen=True):
    interval: Duration = Duration(2.0)
    shards: Annotated[int, msgspec.Meta(ge=1, le=64)] = 2
    cmdline_max_bytes: ByteCount = 256 * 1024
    environ_max_bytes: ByteCount = 1024 * 1024
    # A shard's round is sent in parts of about this many bytes each, however much argv
    # the processes carry (keep it far below transport.max_message_bytes).
    message_bytes: Annotated[int, msgspec.Meta(ge=64 * 1024, le=64 << 20)] = 4 << 20
    # The argv a round carries in all, shared equally by the shards: over a shard's share
    # the longest argv are cut (fairly, each keeping at least 4 KiB), which bounds what
    # tree, classify and filter hold.
    round_argv_bytes: Annotated[int, msgspec.Meta(ge=1 << 20, le=1 << 30)] = 64 << 20

    def __post_init__(self) -> None:
        if self.interval < 0.05:
            raise ValueError("scan.interval must be at least 50ms")


class TreeConfig(_Section, frozen=True):
    # How long after a round's first shard arrived the others may take (plus scan.interval
    # with several shards, whose rounds start at random phases); a later shard is left out
    # of that round and counted.
    grace: Duration = Duration(1.0)


class FilterConfig(_Section, frozen=True):
    lru_size: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 2000
    # A process handed to match counts as judged when its verdict comes back. One without a
    # verdict after ack_timeout is offered again, at most max_attempts times in all.
    ack_timeout: Duration = Duration(60.0)
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3


class EventsConfig(_Section, frozen=True):
    """Discovery by process events (the kernel's proc connector), beside the poll rounds.
    ``auto``: the events stage runs and uses them where the kernel lets it, else says why
    and the rounds go on alone; ``events``: refuse to start without them; ``poll``: rounds
    only (no events stage)."""

    mode: Literal["auto", "events", "poll"] = "auto"
    # Executables held open for processes that may exit before match reads them: how many
    # files, how many bytes in all, how many processes, and for how long each.
    pin_files: Annotated[int, msgspec.Meta(ge=0, le=65536)] = 1024
    pin_bytes: ByteCount = 1 << 30
    pin_processes: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 65536
    pin_hold: Duration = Duration(10.0)
    # The netlink socket's receive buffer (more needs CAP_NET_ADMIN beyond net.core.rmem_max).
    rcvbuf_bytes: Annotated[int, msgspec.Meta(ge=4096, le=1 << 30)] = 32 << 20
    # Datagrams (one event each) taken per wake-up before timers and signals get a look in.
    read_batch: Annotated[int, msgspec.Meta(ge=1, le=65536)] = 512


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
    # tcp only: the CURVE key directory (`procsmith keys generate DIR`). A tcp config without
    # it is refused at start unless insecure = true (then every start warns, and the
    # procsmith_transport_insecure gauge is 1).
    keys_dir: str = ""
    insecure: bool = False


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
    # A stage process whose heartbeat is older than this has stalled: /healthz names it, it
    # is counted and (restart_stalled) killed and restarted.
    stall_timeout: Duration = Duration(60.0)
    restart_stalled: bool = True
    # A scan shard left out of this many consecutive rounds makes the node unhealthy.
    shard_missing_rounds: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 3
    # An HTTP client gets this long for its whole request and answer; at most
    # http_max_connections are open at once (the oldest is dropped for a new one).
    http_timeout: Duration = Duration(2.0)
    http_max_connections: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 16

    def __post_init__(self) -> None:
        parse_addr(self.metrics_addr)  # ValueError names the problem
        if self.stall_timeout < 2:
            raise ValueError("supervisor.stall_timeout must be at least 2s")
        if self.http_timeout < 0.1:
            raise ValueError("supervisor.http_timeout must be at least 100ms")


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
    # Processes that may wait in one replica, all workspaces together (stages.fairqueue).
    queue: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 10_000

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
    # Each finding is fsync'ed before it counts as written; at most backlog findings wait
    # for an output that fails (retried every second; /healthz says so meanwhile).
    fsync: bool = True
    backlog: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 10_000

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


class WorkspacesConfig(_Section, frozen=True):
    """Which rules find workspaces (SPEC §1, "Workspace providers"), in order: ``gitpod`` (the
    tree), ``cgroup`` (containers, Kubernetes pods and systemd units, by /proc/<pid>/cgroup).
    The selectors choose which cgroups are workspaces; they need the cgroup provider, and
    ``namespaces``/``pod_labels`` need the pod list (``pod_list_url``)."""

    providers: list[Literal["gitpod", "cgroup"]] = msgspec.field(default_factory=lambda: ["gitpod"])
    cgroup_patterns: list[str] = msgspec.field(default_factory=list)
    units: list[str] = msgspec.field(default_factory=list)
    namespaces: list[str] = msgspec.field(default_factory=list)
    pod_labels: dict[str, str] = msgspec.field(default_factory=dict)
    pod_list_url: str = ""
    pod_list_token_file: str = ""
    pod_list_ca_file: str = ""
    pod_list_refresh: Duration = Duration(30.0)
    pod_list_timeout: Duration = Duration(2.0)
    cgroup_root: str = ""

    def __post_init__(self) -> None:
        if not self.providers or len(set(self.providers)) != len(self.providers):
            raise ValueError("workspaces.providers must name each provider once, at least one")
        selectors = ("cgroup_patterns", "units", "namespaces", "pod_labels", "pod_list_url")
        given = [name for name in selectors if getattr(self, name)]
        if given and "cgroup" not in self.providers:
            raise ValueError(f"workspaces.{given[0]} needs the cgroup provider in providers")
        if (self.namespaces or self.pod_labels) and not self.pod_list_url:
            key = "namespaces" if self.namespaces else "pod_labels"
            raise ValueError(f"workspaces.{key} needs workspaces.pod_list_url (the pod list)")
        if self.pod_list_url and not re.fullmatch(r"https?://[^/?#\s]+[^\s]*", self.pod_list_url):
            raise ValueError("workspaces.pod_list_url must be an http:// or https:// URL")
        if not 0.1 <= self.pod_list_timeout <= 60:
            raise ValueError("workspaces.pod_list_timeout must be between 100ms and 60s")
        if self.pod_list_refresh < 1:
            raise ValueError("workspaces.pod_list_refresh must be at least 1s")
        if self.cgroup_root and not self.cgroup_root.startswith("/"):
            raise ValueError("workspaces.cgroup_root must be an absolute path")


class Config(_Section, frozen=True):
    proc_root: str = "/proc"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    scan: ScanConfig = msgspec.field(default_factory=ScanConfig)
    tree: TreeConfig = msgspec.field(default_factory=TreeConfig)
    filter: FilterConfig = msgspec.field(default_factory=FilterConfig)
    events: EventsConfig = msgspec.field(default_factory=EventsConfig)
    match: MatchConfig = msgspec.field(default_factory=MatchConfig)
    enforce: EnforceConfig = msgspec.field(default_factory=EnforceConfig)
    transport: TransportConfig = msgspec.field(default_factory=TransportConfig)
    supervisor: SupervisorConfig = msgspec.field(default_factory=SupervisorConfig)
    workspaces: WorkspacesConfig = msgspec.field(default_factory=WorkspacesConfig)

    def __post_init__(self) -> None:
        # One scan of an executable is progress the heartbeat cannot see inside of.
        if self.supervisor.stall_timeout <= self.match.scan_timeout:
            raise ValueError("supervisor.stall_timeout must be longer than match.scan_timeout")


def bundled_config_path() -> Path:
    """``config/procsmith.toml`` of the source tree this package runs from."""
    return BUNDLED_CONFIG_DIR / "procsmith.toml"
