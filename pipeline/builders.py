"""Stage logic built from the config: the one place where ``Config`` meets ``stages``.

A stage module takes plain typed arguments (a procfs root, bounds, a compiled signature
set); this module reads them out of the config, so no stage knows the config's shape.
"""

from __future__ import annotations

from pipeline.config import Config, ConfigError
from pipeline.wiring import STAGE_NAMES
from stages import classify, enforce, filter, match, scan, tree
from stages.base.contract import Stage
from stages.base.meter import Meter
from stages.base.schema import Level
from stages.signatures import SignatureSet


def scan_reader(
    config: Config, meter: Meter, *, shard: int = 0, shards: int = 1
) -> scan.ShardReader:
    """The reader of shard ``shard`` of ``shards`` with the config's procfs root and bounds."""
    return scan.ShardReader(
        config.proc_root,
        meter,
        shard=shard,
        shards=shards,
        cmdline_max_bytes=config.scan.cmdline_max_bytes,
        environ_max_bytes=config.scan.environ_max_bytes,
    )


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
        )
    except enforce.OutputUnavailable as err:
        raise ConfigError(f"enforce.output: {err}") from None


def build_stage(
    name: str,
    config: Config,
    meter: Meter,
    *,
    index: int,
    count: int,
    signatures: SignatureSet | None,
) -> Stage:
    """The logic object of one stage process (``index`` of ``count`` replicas).
    ``signatures`` are match's, compiled by the preflight checks."""
    if name == "scan":
        reader = scan_reader(config, meter, shard=index, shards=count)
        return scan.ScanStage(reader, config.scan.interval)
    if name == "tree":
        return tree.TreeStage(config.scan.shards, config.tree.grace, meter)
    if name == "classify":
        return classify.ClassifyStage(meter)
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
        return match.MatchStage(matcher(config, meter, signatures))
    if name == "enforce":
        return enforce.EnforceStage(enforcer(config, meter))
    raise KeyError(f"no stage named {name!r}; stages are {', '.join(STAGE_NAMES)}")
