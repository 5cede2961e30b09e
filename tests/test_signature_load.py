"""Loading signature files: agent-smith JSON and YARA, what is refused and how it is said."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from pipeline.configschema import BUNDLED_CONFIG_DIR
from simulation.elfbins import ElfBins
from stages.base.schema import Level
from stages.signatures import SignatureError, load_signatures
from tests.sigfiles import one_signature, sig, write_config

EACH_KIND = {
    "very": {
        "signatures": [
            sig("sym", "randomx_init_dataset", kind="elf"),
            sig("sym-re", "^cryptonight_.*", kind="elf", regexp=True),
        ]
    },
    "audit": {
        "signatures": [
            sig("rodata", "stratum+tcp://", kind="elf-rodata"),
            sig("rodata-re", r"mining\.subscribe", kind="elf-rodata", regexp=True),
        ]
    },
    "barely": {
        "signatures": [
            sig("any", "randomx"),
            sig("any-re", "random[x]", regexp=True),
            sig("head", "ELF", start=1, end=4),
            sig("fs", "stratum", domain="filesystem"),
        ]
    },
}


def test_one_signature_of_each_kind_loads_and_matches(tmp_path: Path, elf_bins: ElfBins) -> None:
    signatures = load_signatures([write_config(tmp_path / "all.json", **EACH_KIND)])
    assert signatures.signature_count == 8
    hits = signatures.judge_file(str(elf_bins.miner), 1 << 30)
    assert [h.signature for h in hits] == [
        "sym",
        "sym-re",
        "rodata",
        "rodata-re",
        "any",
        "any-re",
        "head",
        "fs",
    ]
    assert signatures.judge_file(str(elf_bins.clean), 1 << 30) == [
        h for h in hits if h.signature == "head"
    ]


def test_yara_file_alongside(tmp_path: Path, elf_bins: ElfBins) -> None:
    yar = tmp_path / "extra.yar"
    yar.write_text(
        'rule pool_url { meta: level = "very" strings: $a = "stratum+tcp://" condition: $a }\n'
        'rule quiet { strings: $a = "mining.subscribe" condition: $a }\n'
        'rule sym { strings: $a = "no such thing anywhere" condition: $a }\n'
    )
    json_file = one_signature(tmp_path / "a.json", sig("sym", "randomx"), level="barely")
    signatures = load_signatures([json_file, yar])
    hits = signatures.judge_file(str(elf_bins.miner_stripped), 1 << 30)
    # A rule without level metadata is audit, agent-smith's default level.
    assert [(h.signature, h.level) for h in hits] == [
        ("pool_url", Level.VERY),
        ("quiet", Level.AUDIT),
        ("sym", Level.BARELY),
    ]


def test_the_whole_agent_smith_config_is_accepted(tmp_path: Path) -> None:
    """Its other top-level keys are ignored; keys match case-insensitively; null is zero."""
    config = {
        "namespace": "default",
        "gitpodAPI": {"hostURL": "https://example.com"},
        "enforcement": {"default": {"audit blocklisted executable": "stop workspace"}},
        "Blocklists": {
            "Very": {"Binaries": ["xmrig"], "allowlist": None, "signatures": None},
            "audit": None,
            "barely": {"signatures": [{"Name": "x", "Pattern": "eA==", "Slice": None}]},
        },
    }
    path = tmp_path / "agent-smith.json"
    path.write_text(json.dumps(config))
    signatures = load_signatures([path])
    assert (signatures.signature_count, signatures.commandline_count) == (1, 1)


def test_bundled_signatures_are_all_documented() -> None:
    config = json.loads((BUNDLED_CONFIG_DIR / "signatures.json").read_text())
    doc = (BUNDLED_CONFIG_DIR / "signatures.md").read_text()
    entries = []
    for level in config["blocklists"].values():
        entries += [s["name"] for s in level.get("signatures", [])]
        entries += level.get("binaries", [])
    assert len(entries) > 10
    for entry in entries:
        assert f"| `{entry}` |" in doc, entry


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


@pytest.mark.parametrize(
    ("signature", "words"),
    [
        ({"name": "empty", "pattern": ""}, ["'empty'", "pattern", "no pattern"]),
        ({"name": "nopat"}, ["'nopat'", "pattern", "no pattern"]),
        ({"name": "b64", "pattern": "not base64!"}, ["'b64'", "pattern", "base64"]),
        (
            {"name": "re", "pattern": b64("ab("), "regexp": True},
            ["'re'", "pattern", "unclosed group"],
        ),
        (
            {"name": "re-empty", "pattern": b64("a*"), "regexp": True},
            ["'re-empty'", "pattern", "empty"],
        ),
        (
            {"name": "re-utf8", "pattern": b64(b"\xff+"), "regexp": True},
            ["'re-utf8'", "pattern", "UTF-8"],
        ),
        (
            {"name": "s", "pattern": b64("x"), "kind": "elf", "slice": {"start": 1, "end": 9}},
            ["'s'", "slice", "elf"],
        ),
        (
            {"name": "s2", "pattern": b64("x"), "slice": {"start": 9, "end": 9}},
            ["'s2'", "slice.end", "greater"],
        ),
        (
            {"name": "s3", "pattern": b64("x"), "slice": {"start": -1}},
            ["'s3'", "slice.start", "negative"],
        ),
        ({"name": "s4", "pattern": b64("x"), "slice": {"end": 1.5}}, ["'s4'", "slice.end"]),
        ({"name": "k", "pattern": b64("x"), "kind": "pe"}, ["'k'", "kind", "'pe'"]),
        ({"name": "d", "pattern": b64("x"), "domain": "net"}, ["'d'", "domain", "'net'"]),
        ({"name": "r", "pattern": b64("x"), "regexp": "yes"}, ["'r'", "regexp", "boolean"]),
        ({"name": "f", "pattern": b64("x"), "filenames": "a"}, ["'f'", "filenames", "array"]),
        ({"name": "u", "pattern": b64("x"), "regex": True}, ["unknown field 'regex'"]),
        ({"name": 5, "pattern": b64("x")}, ["name", "string"]),
    ],
)
def test_malformed_signature_refused_naming_it(
    tmp_path: Path, signature: dict[str, Any], words: list[str]
) -> None:
    path = one_signature(tmp_path / "bad.json", signature, level="very")
    with pytest.raises(SignatureError) as err:
        load_signatures([path])
    message = str(err.value)
    for word in [str(path), "blocklists.very.signatures[0]", *words]:
        assert word in message, message


@pytest.mark.parametrize(
    ("level", "words"),
    [
        ({"binaries": [""]}, ["binaries[0]", "every process"]),
        ({"binaries": "xmrig"}, ["binaries", "array"]),
        ({"allowlist": ["ok", "(unclosed"]}, ["allowlist[1]", "unclosed group"]),
        ({"signatures": {"name": "x"}}, ["signatures", "array"]),
        ({"signature": []}, ["unknown field 'signature'"]),
    ],
)
def test_malformed_level_refused_naming_the_field(
    tmp_path: Path, level: dict[str, Any], words: list[str]
) -> None:
    path = write_config(tmp_path / "bad.json", audit=level)
    with pytest.raises(SignatureError) as err:
        load_signatures([path])
    for word in [str(path), "blocklists.audit", *words]:
        assert word in str(err.value), str(err.value)


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("bad.json", b'{"blocklists": {', ["not valid JSON"]),
        ("list.json", b"[]", ["expected a JSON object"]),
        ("other.json", b'{"namespace": "x"}', ['no "blocklists"']),
        ("levels.json", b'{"blocklists": {"severe": {}}}', ["unknown field 'severe'"]),
        ("deep.json", b"[" * 5000 + b"]" * 5000, ["not valid JSON"]),
        (
            "syntax.yar",
            b"rule a { condition: true }\nrule b {\n condition: no }",
            ["'b'", "line 3"],
        ),
        ("regexp.yar", b"rule c {\n strings: $a = /x*/\n condition: $a }\n", ["'c'", "empty"]),
        ("binary.yar", b"rule \xff {}", ["not UTF-8"]),
        ("level.yar", b'rule d { meta: level = "high" condition: true }', ["'d'", "'high'"]),
        ("include.yar", b'include "other.yar"\n', ["include"]),
    ],
)
def test_bad_files_refused_with_file_and_reason(
    tmp_path: Path, name: str, content: bytes, words: list[str]
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SignatureError) as err:
        load_signatures([path])
    for word in [str(path), *words]:
        assert word in str(err.value), str(err.value)


def test_unreadable_files_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(64 << 20)
    for path, words in [
        (tmp_path / "missing.json", ["cannot read", "No such file"]),
        (tmp_path, ["cannot read", "not a regular file"]),
        (fifo, ["cannot read", "not a regular file"]),  # and it did not block
        (big, ["larger than"]),
    ]:
        with pytest.raises(SignatureError) as err:
            load_signatures([path])
        for word in [str(path), *words]:
            assert word in str(err.value), str(err.value)


@pytest.mark.parametrize(
    "pattern",
    [
        "x/ condition: true } rule evil { condition: true } rule z { strings: $a = /x",
        "x\\/ condition: true }",
        "a\nrule evil { condition: true }",
        "a\u2028/ condition: true }",
        '"; condition: true }',
    ],
)
def test_patterns_cannot_inject_rules(tmp_path: Path, pattern: str) -> None:
    """Whatever a pattern holds, it is one rule matching only what it describes."""
    data = b"nothing to see here"
    for regexp in (False, True):
        for kind in ("", "elf"):
            path = one_signature(tmp_path / "s.json", sig("p", pattern, kind=kind, regexp=regexp))
            try:
                signatures = load_signatures([path])
            except SignatureError:
                continue  # refused is fine; accepted must be harmless
            assert signatures.signature_count == 1
            assert sum(1 for _ in signatures.file_rules) == 1
            assert signatures.judge_bytes(data) == []


def test_equal_levels_keep_file_order(tmp_path: Path) -> None:
    yar = tmp_path / "a.yar"
    yar.write_text('rule from_yara { strings: $a = "needle" condition: $a }')
    json_file = one_signature(tmp_path / "b.json", sig("from_json", "needle"))
    for paths, first in (([yar, json_file], "from_yara"), ([json_file, yar], "from_json")):
        hits = load_signatures(paths).judge_bytes(b"a needle")
        assert [h.signature for h in hits] == [first, ({"from_yara", "from_json"} - {first}).pop()]
