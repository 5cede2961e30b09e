"""`procsmith match` and `procsmith signatures check`, run as a user runs them."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from pipeline.configschema import BUNDLED_CONFIG_DIR
from simulation.elfbins import ElfBins
from simulation.harness import run_procsmith as procsmith
from tests.sigfiles import one_signature, sig, write_config


def lines(stdout: str) -> list[dict[str, str]]:
    return [orjson.loads(line) for line in stdout.splitlines()]


def test_match_prints_one_finding_a_line(tmp_path: Path, elf_bins: ElfBins) -> None:
    config = write_config(
        tmp_path / "a.json",
        very={"signatures": [sig("sym", "randomx_init_dataset", kind="elf")]},
        barely={"signatures": [sig("str", "randomx")]},
    )
    yar = tmp_path / "b.yar"
    yar.write_text(
        'rule pool { meta: level = "audit" strings: $a = "stratum+tcp://" condition: $a }'
    )
    done = procsmith(
        "match", "--signatures", str(config), "--signatures", str(yar), str(elf_bins.miner)
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert lines(done.stdout) == [
        {
            "path": str(elf_bins.miner),
            "signature": "sym",
            "level": "very",
            "classifier": "signature",
        },
        {
            "path": str(elf_bins.miner),
            "signature": "pool",
            "level": "audit",
            "classifier": "signature",
        },
        {
            "path": str(elf_bins.miner),
            "signature": "str",
            "level": "barely",
            "classifier": "signature",
        },
    ]


def test_match_defaults_to_the_bundled_signatures(elf_bins: ElfBins) -> None:
    done = procsmith("match", str(elf_bins.miner_stripped), str(elf_bins.clean))
    assert done.returncode == 0, done.stderr
    found = lines(done.stdout)
    assert found and {f["path"] for f in found} == {str(elf_bins.miner_stripped)}
    assert found[0]["level"] == "very"


def test_nothing_matched_is_success(tmp_path: Path, elf_bins: ElfBins) -> None:
    config = one_signature(tmp_path / "a.json", sig("x", "no such bytes anywhere"))
    done = procsmith("match", "--signatures", str(config), str(elf_bins.clean))
    assert (done.returncode, done.stdout) == (0, "")


def test_unreadable_file_is_reported_and_the_others_judged(
    tmp_path: Path, elf_bins: ElfBins
) -> None:
    config = one_signature(tmp_path / "a.json", sig("x", "randomx"))
    missing = str(tmp_path / "missing")
    done = procsmith(
        "match", "--signatures", str(config), missing, str(tmp_path), str(elf_bins.miner)
    )
    assert done.returncode == 1
    assert [f["path"] for f in lines(done.stdout)] == [str(elf_bins.miner)]
    assert f"{missing}: not judged" in done.stderr
    assert "2 of 3 files could not be judged" in done.stderr
    assert "Traceback" not in done.stderr


BAD_FILES = [
    ("missing.json", None, ["cannot read"]),
    ("bad.json", b"{", ["not valid JSON"]),
    (
        "regexp.json",
        orjson.dumps({"blocklists": {"audit": {"signatures": [sig("re", "a(", regexp=True)]}}}),
        ["blocklists.audit.signatures[0] 're'", "pattern", "unclosed group"],
    ),
    ("bad.yar", b"rule x {\n  condition: nope\n}\n", ["rule 'x'", "line 2", "unknown identifier"]),
]


@pytest.mark.parametrize(("name", "content", "words"), BAD_FILES)
def test_bad_signature_files_exit_2_naming_what_is_wrong(
    tmp_path: Path, elf_bins: ElfBins, name: str, content: bytes | None, words: list[str]
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    for args in (
        ["signatures", "check", str(path)],
        ["match", "--signatures", str(path), "x"],
    ):
        done = procsmith(*args)
        assert done.returncode == 2, args
        assert done.stdout == ""
        assert "Traceback" not in done.stderr
        for word in [str(path), *words]:
            assert word in done.stderr, done.stderr


def test_signatures_check_good_and_bad_together(tmp_path: Path) -> None:
    good = one_signature(tmp_path / "good.json", sig("x", "abc"))
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    done = procsmith("signatures", "check", str(good), str(bad))
    assert done.returncode == 2
    assert f"{good}: ok: 1 signatures, 0 command-line rules" in done.stdout
    assert str(bad) in done.stderr
    bundled = procsmith("signatures", "check", str(BUNDLED_CONFIG_DIR / "signatures.json"))
    assert bundled.returncode == 0, bundled.stderr


def test_bad_usage_exits_2() -> None:
    for args in (["match"], ["signatures"], ["signatures", "check"]):
        done = procsmith(*args)
        assert done.returncode == 2, args
        assert "Traceback" not in done.stderr


def test_signatures_check_names_each_rule_that_times_out(tmp_path: Path) -> None:
    """Issue 13: a rule that makes every scan time out passes compiling; the probe finds it."""
    slow = tmp_path / "slow.yar"
    slow.write_text(
        'rule fast_one { strings: $a = "xmrig" condition: $a }\n'
        "rule slow_one { condition: for all i in (0..filesize) : "
        "( for all j in (0..filesize) : ( uint8(i) != 300 ) ) }\n"
        "rule also_fine { condition: filesize > 10 }\n"
    )
    good = tmp_path / "good.yar"
    good.write_text('rule fine { strings: $a = "xmrig" condition: $a }\n')
    done = procsmith("signatures", "check", str(slow), str(good))
    assert done.returncode == 1, done.stderr
    assert f"warning: {slow}: rule slow_one takes over 1s" in done.stderr
    assert "fast_one" not in done.stderr and "also_fine" not in done.stderr
    assert f"{good}: ok: 1 signatures" in done.stdout
    assert str(slow) not in done.stdout
