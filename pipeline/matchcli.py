"""``procsmith match`` and ``procsmith signatures check``: signatures from the command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipeline.config import load_named_config
from stages.base import exitcodes
from stages.base.catalog import MATCH_EXE_TRUNCATED, MATCH_SKIPPED
from stages.base.meter import Tally

MATCH_HELP = "judge files with the signatures; prints one JSON finding a line"
MATCH_EPILOG = """\
Each line is {"path", "signature", "level", "classifier"}, every matching signature of a
file, most severe first. Exit status: 0 whether or not anything matched; 2 on bad usage, a
bad config or a bad signature file; 1 when some FILE could not be judged (the others are).
Give --signatures once per signature file.
"""
CHECK_HELP = (
    "validate signature files (agent-smith JSON or YARA); exit 2 naming what is wrong, "
    "exit 1 naming each rule that times out on a small probe"
)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Registers ``match`` and ``signatures check``."""
    match = sub.add_parser(
        "match",
        help=MATCH_HELP,
        description=MATCH_HELP,
        epilog=MATCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    match.add_argument("--config", metavar="FILE", help="TOML config (default: built-in)")
    match.add_argument(
        "--signatures",
        metavar="F",
        action="append",
        help="a signature file, agent-smith JSON or *.yar; may be given more than once "
        "(default: the config's match.signatures)",
    )
    match.add_argument("files", metavar="FILE", nargs="+", help="files to judge")
    match.set_defaults(func=cmd_match)

    signatures = sub.add_parser("signatures", help="signature file tools")
    tools = signatures.add_subparsers(dest="tool", required=True, metavar="TOOL")
    check = tools.add_parser("check", help=CHECK_HELP, description=CHECK_HELP)
    check.add_argument("files", metavar="F", nargs="+", help="signature files")
    check.set_defaults(func=cmd_signatures_check)


def _say(message: str) -> None:
    sys.stderr.write(f"procsmith: {message}\n")


def cmd_match(args: argparse.Namespace) -> int:
    # Deferred: YARA-X and the signature code load only for the commands that use them.
    import orjson  # noqa: PLC0415 - see above

    from stages.signatures import (  # noqa: PLC0415 - see above
        SignatureError,
        Unjudgeable,
        load_signatures,
        read_executable,
    )

    config = load_named_config(args.config, os.environ)
    paths = [Path(p) for p in (args.signatures or config.match.signatures)]
    try:
        signatures = load_signatures(paths)
    except SignatureError as err:
        _say(str(err))
        return exitcodes.USAGE
    signatures.set_timeout(config.match.scan_timeout)
    limit = config.match.max_exe_bytes
    tally = Tally()
    out = sys.stdout.buffer
    for file in args.files:
        try:
            executable = read_executable(file, limit)
            if executable.truncated:
                tally.inc(MATCH_EXE_TRUNCATED)
                _say(f"{file}: only its first {limit} bytes judged (match.max_exe_bytes)")
            hits = signatures.judge_bytes(executable.data)
        except Unjudgeable as err:
            tally.inc(MATCH_SKIPPED, reason=err.reason)
            _say(f"{file}: not judged: {err}")
            continue
        for hit in hits:
            line = {"path": file, "signature": hit.signature, "level": hit.level}
            line["classifier"] = hit.classifier
            out.write(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))
        out.flush()
    skipped = sum(v for (name, _), v in tally.values.items() if name == MATCH_SKIPPED)
    if skipped:
        _say(f"{int(skipped)} of {len(args.files)} files could not be judged")
        return exitcodes.FAILURE
    return exitcodes.OK


def cmd_signatures_check(args: argparse.Namespace) -> int:
    from stages.signatures import (  # noqa: PLC0415 - YARA-X only when a command needs it
        SignatureError,
        load_signatures,
    )
    from stages.signatures.probe import PROBE, PROBE_TIMEOUT, slow_rules  # noqa: PLC0415

    code = exitcodes.OK
    for file in args.files:
        try:
            signatures = load_signatures([Path(file)])
        except SignatureError as err:
            _say(str(err))
            code = exitcodes.USAGE
            continue
        for warning in signatures.warnings:
            _say(f"warning: {warning}")
        slow = slow_rules(signatures)
        for culprit in slow:
            _say(
                f"warning: {culprit} takes over {PROBE_TIMEOUT}s on a {len(PROBE) >> 10} KiB "
                "probe: every executable would time out (match.scan_timeout)"
            )
        if slow:
            code = max(code, exitcodes.FAILURE)
            continue
        sys.stdout.write(
            f"{file}: ok: {signatures.signature_count} signatures, "
            f"{signatures.commandline_count} command-line rules\n"
        )
    return code
