"""Property tests for signature files: any input gives a set or a SignatureError, nothing else;
patterns, however odd, match exactly what they describe."""

from __future__ import annotations

import base64
import contextlib
import json
import random
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.configschema import Config
from stages.signatures import SignatureError, load_signatures
from stages.signatures.agentsmith import parse_agent_smith
from tests.sigfiles import one_signature, sig

_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# JSON values biased towards the shapes and keys the loader looks at.
_KEYS = st.sampled_from(
    ["blocklists", "very", "audit", "barely", "binaries", "allowlist", "signatures", "name",
     "domain", "kind", "pattern", "regexp", "slice", "start", "end", "filenames", "Kind", "x"]
)  # fmt: skip
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=False),
    st.sampled_from(["", "elf", "elf-rodata", "process", "filesystem", "eA==", "YSo=", "(", "*"]),
    st.text(max_size=12),
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_KEYS, inner, max_size=6)),
    max_leaves=30,
)


@pytest.fixture(scope="module")
def sig_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sigprops")


def _load(document: Any, directory: Path) -> None:
    path = directory / "props.json"
    path.write_text(json.dumps({"blocklists": document}))
    with contextlib.suppress(SignatureError):
        load_signatures([path])


@_SETTINGS
@given(st.binary(max_size=300))
def test_any_bytes_parse_or_refuse(data: bytes) -> None:
    with contextlib.suppress(SignatureError):
        parse_agent_smith(data, "f.json")


@_SETTINGS
@given(_JSON)
def test_any_json_loads_or_refuses(sig_dir: Path, document: Any) -> None:
    _load(document, sig_dir)


_SIGNATURE = st.fixed_dictionaries(
    {"pattern": st.binary(max_size=12).map(lambda b: base64.b64encode(b).decode())},
    optional={
        "name": st.text(max_size=8),
        "kind": st.sampled_from(["", "elf", "elf-rodata"]),
        "domain": st.sampled_from(["", "process", "filesystem"]),
        "regexp": st.booleans(),
        "slice": st.fixed_dictionaries(
            {}, optional={"start": st.integers(0, 99), "end": st.integers(0, 99)}
        ),
    },
)
_LEVEL = st.fixed_dictionaries(
    {},
    optional={
        "binaries": st.lists(st.text(max_size=8), max_size=3),
        "allowlist": st.lists(st.text(max_size=8), max_size=3),
        "signatures": st.lists(_SIGNATURE, max_size=3),
    },
)


@_SETTINGS
@given(st.dictionaries(st.sampled_from(["very", "audit", "barely"]), _LEVEL))
def test_well_shaped_configs_load_or_refuse(sig_dir: Path, document: dict[str, Any]) -> None:
    """Shapes close to valid reach the YARA-X compiler with odd patterns and regexps."""
    _load(document, sig_dir)


@_SETTINGS
@given(st.binary(min_size=1, max_size=40), st.integers(0, 2000), st.integers(0, 2**32))
def test_a_literal_pattern_is_found_where_it_is(
    sig_dir: Path, pattern: bytes, offset: int, seed: int
) -> None:
    noise = random.Random(seed).randbytes(2100)  # noqa: S311 - test data
    filler = bytes(b for b in noise if b not in pattern[:1])
    data = filler[:offset] + pattern + filler[offset:]
    signatures = load_signatures([one_signature(sig_dir / "lit.json", sig("p", pattern))])
    assert [h.signature for h in signatures.judge_bytes(data)] == ["p"]
    assert signatures.judge_bytes(filler) == []


def _quote_meta(text: str) -> str:
    """Go's regexp.QuoteMeta."""
    return "".join("\\" + c if c in "\\.+*?()|[]{}^$" else c for c in text)


@_SETTINGS
@given(st.text(alphabet=string.printable, min_size=1, max_size=30))
def test_a_quoted_regexp_matches_its_text(sig_dir: Path, text: str) -> None:
    """Slashes, quotes, newlines and every other ASCII byte survive the trip into YARA."""
    path = one_signature(sig_dir / "re.json", sig("re", _quote_meta(text), regexp=True))
    signatures = load_signatures([path])
    raw = text.encode()
    assert [h.signature for h in signatures.judge_bytes(b"\x00\x01" + raw + b"\x02")] == ["re"]
    assert signatures.judge_bytes(b"\x00\x01" + raw[:-1] + b"\x02") == []


_BUNDLED = load_signatures([Path(p) for p in Config().match.signatures])
_ELF_HEAD = bytes.fromhex("7f454c46020101000000000000000000")  # ELF64, little-endian


@_SETTINGS
@given(st.binary(max_size=4096), st.booleans())
def test_any_file_content_is_judged(data: bytes, elf_magic: bool) -> None:
    """YARA-X parses whatever claims to be ELF; judging returns hits or nothing, never raises."""
    hits = _BUNDLED.judge_bytes((_ELF_HEAD + data) if elf_magic else data)
    assert all(h.signature for h in hits)


@_SETTINGS
@given(st.lists(st.text(max_size=40), max_size=6))
def test_any_argv_is_judged(argv: list[str]) -> None:
    """Any text, lone surrogates included, goes through the command-line rules."""
    hits = _BUNDLED.judge_argv(argv)
    assert all(h.classifier == "commandline" for h in hits)
