"""The ``procsmith`` command line (SPEC §4)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from pipeline import exitcodes
from pipeline.config import Config, ConfigError, load_config
from pipeline.matchcli import add_commands as add_match_commands


def _config(args: argparse.Namespace) -> Config:
    """The config named by --config (or $PROCSMITH_CONFIG), with --proc-root applied."""
    path = args.config or os.environ.get("PROCSMITH_CONFIG")
    config = load_config(Path(path) if path else None, os.environ)
    proc_root = getattr(args, "proc_root", None)
    if proc_root is not None:
        config = msgspec.structs.replace(config, proc_root=proc_root)
    if not os.path.isdir(config.proc_root):
        raise ConfigError(f"proc_root {config.proc_root!r} is not a directory")
    return config


def cmd_once(args: argparse.Namespace) -> int:
    from pipeline.local import LocalDetector  # noqa: PLC0415 - keeps `procsmith --help` light
    from pipeline.render import process_line  # noqa: PLC0415

    detector = LocalDetector(_config(args))
    out = sys.stdout.buffer
    for proc in detector.round():
        out.write(process_line(proc))
    out.flush()
    return exitcodes.OK


def cmd_run(args: argparse.Namespace) -> int:
    """Until the multiprocess pipeline lands: the four steps in this process, every interval."""
    import signal  # noqa: PLC0415
    import time  # noqa: PLC0415

    from pipeline.local import LocalDetector  # noqa: PLC0415
    from pipeline.render import process_line  # noqa: PLC0415

    config = _config(args)
    stop: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda n, _f: stop.append(n))
    detector = LocalDetector(config)
    out = sys.stdout.buffer
    while not stop:
        for proc in detector.round():
            out.write(process_line(proc))
        out.flush()
        deadline = time.monotonic() + config.scan.interval
        while not stop and time.monotonic() < deadline:
            time.sleep(0.05)
    return exitcodes.OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="procsmith",
        description="Finds crypto miners and other blocklisted programs in developer workspaces.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], int], help_: str) -> Any:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        p.add_argument("--config", metavar="FILE", help="TOML config (default: built-in)")
        return p

    once = command(
        "once",
        cmd_once,
        "one scan through scan, tree, classify and filter; prints the new user-workload "
        "records as JSON lines, sorted by pid",
    )
    once.add_argument("--proc-root", metavar="DIR", help="procfs root (default: config)")
    run = command("run", cmd_run, "the pipeline on this node, until SIGTERM or SIGINT")
    run.add_argument("--proc-root", metavar="DIR", help="procfs root (default: config)")
    add_match_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as err:
        sys.stderr.write(f"procsmith: {err}\n")
        return exitcodes.USAGE
    return code


if __name__ == "__main__":
    sys.exit(main())
