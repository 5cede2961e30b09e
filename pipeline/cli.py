"""The ``procsmith`` command line (SPEC §4)."""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from pipeline.config import ConfigError, load_named_config
from pipeline.configschema import Config
from pipeline.configvalues import parse_addr
from pipeline.keyscli import add_commands as add_keys_commands
from pipeline.matchcli import add_commands as add_match_commands
from pipeline.signals import SignalInbox
from pipeline.wiring import STAGE_NAMES, TAPHUB, replicas
from stages.base import exitcodes

# Deferred imports, each marked "light CLI": the heavy modules (zmq, yara-x, every stage)
# are imported inside the commands that need them, so `procsmith --help`, `--version` and
# `procsmith once` start without loading them.


def _config(args: argparse.Namespace) -> Config:
    """The config named by --config (or $PROCSMITH_CONFIG), with --proc-root applied."""
    config = load_named_config(args.config, os.environ)
    proc_root = getattr(args, "proc_root", None)
    if proc_root is not None:
        config = msgspec.structs.replace(config, proc_root=proc_root)
    if not os.path.isdir(config.proc_root):
        raise ConfigError(f"proc_root {config.proc_root!r} is not a directory")
    logging.getLogger().setLevel(config.log_level.upper())
    return config


def cmd_once(args: argparse.Namespace) -> int:
    from pipeline.local import LocalDetector  # noqa: PLC0415 - light CLI
    from stages.base.render import process_line  # noqa: PLC0415 - light CLI

    detector = LocalDetector(_config(args))
    out = sys.stdout.buffer
    for proc in detector.round():
        out.write(process_line(proc))
    out.flush()
    return exitcodes.OK


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.supervisor import Supervisor  # noqa: PLC0415 - light CLI

    config = _config(args)
    _check_addr(args.metrics_addr)
    return Supervisor(config, args.metrics_addr).run()


def cmd_stage(args: argparse.Namespace) -> int:
    # Caught from here on, before the heavy imports and the preflight (which compiles the
    # signatures): a SIGTERM during start-up then stops the stage cleanly once it is up,
    # instead of killing it half-started.
    inbox = SignalInbox()
    from pipeline.preflight import preflight  # noqa: PLC0415 - light CLI
    from pipeline.stageprocess import run_stage  # noqa: PLC0415 - light CLI
    from pipeline.tap import run_taphub  # noqa: PLC0415 - light CLI

    config = _config(args)
    _check_addr(args.metrics_addr)
    if args.name == TAPHUB:
        prepared = preflight(config, [TAPHUB])  # the run directory, the hub's keys
        return run_taphub(config, inbox, security=prepared.security)
    if args.name not in STAGE_NAMES:
        raise ConfigError(f"no stage {args.name!r}; stages are {', '.join(STAGE_NAMES)}, {TAPHUB}")
    index, count = 0, replicas(args.name, config)
    if args.shard:
        index, count = _shard(args.shard)
        if args.name == "scan" and count != config.scan.shards:
            config = msgspec.structs.replace(
                config, scan=msgspec.structs.replace(config.scan, shards=count)
            )
    elif args.name == "scan" and count > 1:
        raise ConfigError(f"scan.shards is {count}: say which shard this is with --shard K/{count}")
    return run_stage(args.name, config, index, count, metrics_addr=args.metrics_addr, inbox=inbox)


def cmd_tap(args: argparse.Namespace) -> int:
    from pipeline.tap import run_tap_client  # noqa: PLC0415 - light CLI

    return run_tap_client(_config(args), args.stages)


def cmd_demo(args: argparse.Namespace) -> int:
    from simulation.demo import run_demo  # noqa: PLC0415 - light CLI

    _config(args)  # a bad --config is refused here, before anything is started
    return run_demo(args.config)


def _shard(text: str) -> tuple[int, int]:
    k, sep, n = text.partition("/")
    if not (sep and k.isdigit() and n.isdigit() and 0 <= int(k) < int(n) <= 64):
        raise ConfigError(f"--shard expects K/N with 0 <= K < N <= 64, got {text!r}")
    return int(k), int(n)


def _check_addr(addr: str | None) -> None:
    if addr is not None:
        try:
            parse_addr(addr)
        except ValueError as err:
            raise ConfigError(f"--metrics-addr: {err}") from None


def _version() -> str:
    try:
        return importlib.metadata.version("procsmith")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="procsmith",
        description="Finds crypto miners and other blocklisted programs in developer workspaces.",
    )
    parser.add_argument("--version", action="version", version=f"procsmith {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], int], help_: str) -> Any:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        p.add_argument("--config", metavar="FILE", help="TOML config (default: built-in)")
        return p

    proc_root_help = "procfs root (default: config proc_root)"
    run = command("run", cmd_run, "the whole pipeline under the built-in supervisor, until SIGTERM")
    run.add_argument("--proc-root", metavar="DIR", help=proc_root_help)
    run.add_argument(
        "--metrics-addr", metavar="HOST:PORT", help="metrics and health (default 127.0.0.1:9500)"
    )
    stage = command(
        "stage", cmd_stage, "one stage alone, for docker-compose, systemd or Kubernetes"
    )
    stage.add_argument(
        "name",
        metavar="NAME",
        help="scan, tree, classify, filter, match, enforce, events or taphub",
    )
    stage.add_argument(
        "--shard", metavar="K/N", help="scan: this process reads pids with pid mod N == K"
    )
    stage.add_argument("--proc-root", metavar="DIR", help=proc_root_help)
    stage.add_argument("--metrics-addr", metavar="HOST:PORT", help="serve this stage's metrics")
    once = command(
        "once",
        cmd_once,
        "one scan through scan, tree, classify and filter; prints the new user-workload "
        "records as JSON lines, sorted by pid",
    )
    once.add_argument("--proc-root", metavar="DIR", help=proc_root_help)
    tap = command("tap", cmd_tap, "print what stages emit, as JSON lines, until interrupted")
    tap.add_argument("stages", nargs="*", metavar="STAGE", help="stages to watch (default: all)")
    command(
        "demo",
        cmd_demo,
        "a simulated workspace with a harmless stand-in miner on this node, detected end to end",
    )
    add_match_commands(sub)
    add_keys_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s procsmith[%(process)d] %(name)s: %(message)s",
    )
    args = _parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as err:
        sys.stderr.write(f"procsmith: {err}\n")
        return exitcodes.USAGE
    return code


if __name__ == "__main__":
    sys.exit(main())
