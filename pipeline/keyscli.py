"""``procsmith keys generate DIR``: the CURVE key pairs of every role (see pipeline/keyring.py)."""

from __future__ import annotations

import argparse
import sys

from stages.base import exitcodes

GENERATE_HELP = "write a CURVE key pair for every stage role into DIR (made with mode 0700)"
GENERATE_EPILOG = """\
Writes <role>.key (public, 0644) and <role>.key_secret (0600) for the roles scan, tree,
classify, filter, match, enforce, events, taphub and tap (the `procsmith tap` client). Point
transport.keys_dir at DIR. Every process needs all the public keys and its own secret one.
Exit status: 0 when written; 2 when DIR already holds keys (use --force to replace them),
or DIR is not a private directory of this user (mode 0700, no symlinks).
"""


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Registers ``keys generate``."""
    keys = sub.add_parser("keys", help="CURVE key tools for tcp transport")
    tools = keys.add_subparsers(dest="tool", required=True, metavar="TOOL")
    generate = tools.add_parser(
        "generate",
        help=GENERATE_HELP,
        description=GENERATE_HELP,
        epilog=GENERATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    generate.add_argument("dir", metavar="DIR", help="the key directory")
    generate.add_argument("--force", action="store_true", help="replace keys already there")
    generate.set_defaults(func=cmd_keys_generate)


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from pipeline.keyring import KeyringError, generate_keys  # noqa: PLC0415 - loads zmq

    try:
        written = generate_keys(args.dir, force=args.force)
    except KeyringError as err:
        sys.stderr.write(f"procsmith: {err}\n")
        return exitcodes.USAGE
    for path in written:
        sys.stdout.write(f"{path}\n")
    return exitcodes.OK
