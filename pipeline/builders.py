"""Stage logic built from the config: the one place where ``Config`` meets ``stages``.

A stage module takes plain typed arguments (a procfs root, bounds, a compiled signature
set); this module reads them out of the config, so no stage knows the config's shape.
"""

from __future__ import annotations

from pipeline.bounds import shard_argv_budget
from pipeline.config import ConfigError
from pipeline.configschema import Config
from pipeline.wiring import STAGE_NAMES
from stages import (
    classify,
    enforce,
    events,
    filter,
    match,
    podlist,
    providers,
    scan,
    shardreader,
    tree,
)
from stages.base.contract import Stage
from stages.base.meter import Meter, Tally
from stages.base.schema import Level, RawProcess
from stages.execread import ExecReader
from stages.fairqueue import FairQueue
from stages.known import fd_budget
from stages.pins import PinnedExecutables
from stages.procevents import Unavailable, subscribe
from stages.signatures import SignatureSet


def scan_reader(
    config: Config, meter: Meter, *, shard: int = 0, shards: int = 1
) -> shardreader.ShardReader:
    """The reader of shard ``shard`` of ``shards`` with the config's procfs root and bounds."""
    return shardreader.ShardReader(
        config.proc_root,
        meter,
        shard=shard,
        shards=shards,
        cmdline_max_bytes=config.scan.cmdline_max_bytes,
        environ_max_bytes=config.scan.environ_max_bytes,
        read_cgroup="cgroup" in config.workspaces.providers,
    )


def workspace_providers(config: Config, meter: Meter) -> providers.Providers:
    """classify's providers, their selectors and the pod list (when a URL is configured)."""
    w = config.workspaces
    pods = None
    if w.pod_list_url:
        pods = podlist.PodDirectory(
            w.pod_list_url,
            meter,
            refresh=w.pod_list_refresh,
            timeout=w.pod_list_timeout,
            token_file=w.pod_list_token_file,
            ca_file=w.pod_list_ca_file,
        )
    selectors = providers.CgroupSelectors(
        cgroup_patterns=tuple(w.cgroup_patterns),
        units=tuple(w.units),
        namespaces=tuple(w.namespaces),
        pod_labels=tuple(sorted(w.pod_labels.items())),
    )
    return providers.Providers(w.providers, selectors, meter, pods=pods)


def matcher(config: Config, meter: Meter, signatures: SignatureSet) -> match.Matcher:
    m = config.match
    return match.Matcher(
        signatures,
        meter,
        max_exe_bytes=m.max_exe_bytes,
        cache_size=m.cache_size,
        scan_timeout=m.scan_timeout,
        delay=m.delay,
        interpreters=m.interpreters,
        max_mappings=m.max_mappings,
        max_process_bytes=m.max_process_bytes,
        unjudgeable_level=Level(m.unjudgeable_level),
    )


def enforcer(config: Config, meter: Meter) -> enforce.Enforcer:
    e = config.enforce
    try:
        return enforce.Enforcer(
            meter,
            config.proc_root,
            outputs=e.output,
            penalties={
                "very": e.penalties.very,
                "audit": e.penalties.audit,
                "barely": e.penalties.barely,
            },
            exec_command=e.exec_command,
            exec_timeout=e.exec_timeout,
            cgroup_root=config.workspaces.cgroup_root,
            fsync=e.fsync,
            backlog=e.backlog,
        )
    except enforce.OutputUnavailable as err:
        raise ConfigError(f"enforce.output: {err}") from None


def events_stage(config: Config, meter: Meter, restarted: bool | None = None) -> events.EventsStage:
    """The events stage: its subscription (or why there is none), its reader and pins, and
    the full read of procfs that follows a loss (one reader over every pid, no descriptors
    kept: it runs seldom; its skips are not the scan's to count). What happened before it
    listened is a loss (``restart``, or ``start`` when it cannot be told), except at the
    supervisor's first start of it, which starts the scan rounds at the same moment."""
    e = config.events
    if e.mode == "poll":
        raise ConfigError("events.mode is poll: there is no events stage to run")
    source = subscribe(rcvbuf=e.rcvbuf_bytes)
    if isinstance(source, Unavailable) and e.mode == "events":
        raise ConfigError(f"events.mode is events, but process events are unavailable: "
                          f"{source.reason}: {source.detail}")  # fmt: skip
    pins = PinnedExecutables(
        # each file held is a descriptor: within RLIMIT_NOFILE (raised towards its hard limit)
        max_files=fd_budget(e.pin_files),
        max_bytes=e.pin_bytes,
        max_processes=e.pin_processes,
        proc_root=config.proc_root,
    )
    reader = ExecReader(
        config.proc_root,
        pins,
        cmdline_max_bytes=config.scan.cmdline_max_bytes,
        environ_max_bytes=config.scan.environ_max_bytes,
    )

    def full_read() -> list[RawProcess]:
        whole = shardreader.ShardReader(
            config.proc_root,
            Tally(),
            cmdline_max_bytes=config.scan.cmdline_max_bytes,
            environ_max_bytes=config.scan.environ_max_bytes,
            recheck_every=1,
            keep_open=0,
        )
        try:
            return whole.read(0).procs
        finally:
            whole.close()

    at_start = None if restarted is False else ("restart" if restarted else "start")
    return events.EventsStage(
        source,
        reader,
        full_read,
        meter,
        pin_hold=e.pin_hold,
        read_batch=e.read_batch,
        lost_at_start=at_start,
    )


def tree_grace(config: Config) -> float:
    """How long the tree waits for a round's shards: with several, their rounds start at
    independent random phases within the interval, so up to an interval apart."""
    spread = config.scan.interval if config.scan.shards > 1 else 0.0
    return config.tree.grace + spread


def build_stage(  # noqa: PLR0911 - one return per stage
    name: str,
    config: Config,
    meter: Meter,
    *,
    index: int,
    count: int,
    signatures: SignatureSet | None,
    restarted: bool | None = None,
) -> Stage:
    """The logic object of one stage process (``index`` of ``count`` replicas).
    ``signatures`` are match's, compiled by the preflight checks."""
    if name == "scan":
        reader = scan_reader(config, meter, shard=index, shards=count)
        return scan.ScanStage(
            reader,
            config.scan.interval,
            config.scan.message_bytes,
            shard_argv_budget(config),
        )
    if name == "tree":
        return tree.TreeStage(
            config.scan.shards, tree_grace(config), meter, interval=config.scan.interval
        )
    if name == "classify":
        return classify.ClassifyStage(meter, workspace_providers(config, meter))
    if name == "filter":
        return filter.FilterStage(
            filter.SeenFilter(config.filter.lru_size, meter),
            meter,
            ack_timeout=config.filter.ack_timeout,
            max_attempts=config.filter.max_attempts,
        )
    if name == "match":
        if signatures is None:
            raise ValueError("match needs its signatures (preflight loads them)")
        return match.MatchStage(
            matcher(config, meter, signatures), FairQueue(limit=config.match.queue)
        )
    if name == "enforce":
        return enforce.EnforceStage(enforcer(config, meter))
    if name == "events":
        return events_stage(config, meter, restarted)
    raise KeyError(f"no stage named {name!r}; stages are {', '.join(STAGE_NAMES)}")
