"""Command-line rules: per level, allowlist regexps first, then blocklist substrings."""

from __future__ import annotations

from pathlib import Path

import pytest

from stages.base.schema import Level
from stages.signatures import SignatureSet, load_signatures
from tests.sigfiles import write_config


@pytest.fixture
def rules(tmp_path: Path) -> SignatureSet:
    return load_signatures(
        [
            write_config(
                tmp_path / "cmd.json",
                very={"binaries": ["stratum+tcp://"], "allowlist": [r"^\[/opt/pooltest "]},
                audit={"binaries": ["xmrig", "-o|pool"], "allowlist": ["--dry-run"]},
                barely={"binaries": ["miner"]},
            )
        ]
    )


def judged(rules: SignatureSet, argv: list[str]) -> list[tuple[str, Level]]:
    return [(h.signature, h.level) for h in rules.judge_argv(argv)]


def test_blocklist_substring_of_any_argument(rules: SignatureSet) -> None:
    assert judged(rules, ["/tmp/.x/xmrig-6.21", "--threads=2"]) == [("xmrig", Level.AUDIT)]
    assert judged(rules, ["sleep", "1"]) == []
    assert judged(rules, []) == []


def test_blocklist_sees_the_argv_joined_with_bars(rules: SignatureSet) -> None:
    """agent-smith joins the argv with "|", so an entry can span two arguments."""
    assert judged(rules, ["run", "-o", "pool.example:3333"]) == [("-o|pool", Level.AUDIT)]
    assert judged(rules, ["run", "-o pool"]) == []


def test_every_level_is_reported_most_severe_first(rules: SignatureSet) -> None:
    argv = ["./xmrig", "-o", "stratum+tcp://pool:3333", "--coin=miner"]
    assert judged(rules, argv) == [
        ("stratum+tcp://", Level.VERY),
        ("xmrig", Level.AUDIT),
        ("miner", Level.BARELY),
    ]


def test_allowlist_matches_go_formatting_of_argv(rules: SignatureSet) -> None:
    """The allowlist sees the argv as Go's %v prints it: "[a b c]"."""
    assert judged(rules, ["/opt/pooltest", "stratum+tcp://localhost:1"]) == []
    assert judged(rules, ["/usr/bin/pooltest", "stratum+tcp://localhost:1"]) == [
        ("stratum+tcp://", Level.VERY)
    ]


def test_allowlist_only_spares_its_own_level(rules: SignatureSet) -> None:
    argv = ["./xmrig", "--dry-run", "stratum+tcp://pool:3333"]
    assert judged(rules, argv) == [("stratum+tcp://", Level.VERY)]


def test_hostile_argv_cannot_stall_an_allowlist(tmp_path: Path) -> None:
    """A regexp that backtracks exponentially in Python's re is linear in YARA-X."""
    rules = load_signatures(
        [write_config(tmp_path / "c.json", audit={"binaries": ["a"], "allowlist": ["(a+)+$"]})]
    )
    argv = ["a" * 100_000 + "!"]
    assert judged(rules, argv) == [("a", Level.AUDIT)]


def test_non_utf8_arguments(rules: SignatureSet) -> None:
    """procfs argv bytes that are not UTF-8 arrive as backslash escapes; they still match."""
    assert judged(rules, ["\\xff\\xfexmrig\\x00"]) == [("xmrig", Level.AUDIT)]
