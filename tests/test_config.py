"""Config: the bundled file equals the defaults; bad keys, types and values are refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config, load_named_config
from pipeline.configschema import Config, bundled_config_path
from pipeline.configvalues import Duration


def test_bundled_file_is_the_defaults() -> None:
    assert load_config(bundled_config_path()) == Config()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[scan]\nintervall = '2s'\n", ["unknown field `intervall`", "$.scan"]),
        ("[scan]\ninterval = 'soon'\n", ["duration", "$.scan.interval"]),
        ("[scan]\ninterval = '10ms'\n", ["at least 50ms"]),
        ("[scan]\nshards = 0\n", [">= 1", "$.scan.shards"]),
        ("[scan]\nshards = '2'\n", ["Expected `int`", "$.scan.shards"]),
        ("[filter]\nlru_size = -5\n", ["$.filter.lru_size"]),
        ("bogus = 1\n", ["unknown field `bogus`"]),
        ("[scan\n", ["not valid TOML"]),
        ("[enforce.penalties]\nvery = 'exec'\n", ["very is exec", "exec_command is empty"]),
        ("[enforce.penalties]\naudit = 'stop workspace'\n", ["$.enforce.penalties.audit"]),
        ("[enforce]\nexec_command = ['']\n", ["exec_command[0]"]),
        ("[enforce]\noutput = ['-', '-']\n", ["same output twice"]),
        ("[match]\nsignatures = []\n", ["at least one signature file"]),
        ("[match]\nscan_timeout = '500ms'\n", ["at least 1s"]),
        ("[match]\nmax_exe_bytes = 0\n", ["$.match.max_exe_bytes"]),
        ("[match]\nreplicas = 0\n", ["$.match.replicas"]),
        ("[match]\ncache = 5\n", ["unknown field `cache`"]),
    ],
)
def test_refused_with_file_key_and_reason(tmp_path: Path, text: str, words: list[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    for word in [str(path), *words]:
        assert word in str(err.value)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_env_overrides() -> None:
    env = {
        "PROCSMITH_SCAN__INTERVAL": "500ms",
        "PROCSMITH_FILTER__LRU_SIZE": "7",
        "PROCSMITH_PROC_ROOT": "/host/proc",
        "PROCSMITH_CONFIG": "ignored",
        "HOME": "/",
        "PROCSMITH_ENFORCE__PENALTIES__VERY": "kill-process",
    }
    config = load_config(None, env)
    assert (config.scan.interval, config.filter.lru_size, config.proc_root) == (
        0.5,
        7,
        "/host/proc",
    )
    assert config.enforce.penalties.very == "kill-process"


def test_env_cannot_make_a_value_a_section(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[scan]\ninterval = '1s'\n")
    with pytest.raises(
        ConfigError, match="PROCSMITH_SCAN__INTERVAL__X: 'interval' is not a section"
    ):
        load_config(path, {"PROCSMITH_SCAN__INTERVAL__X": "1"})


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"PROCSMITH_SCAN__INTERVALL": "1s"}, ["PROCSMITH_SCAN__INTERVALL", "intervall"]),
        ({"PROCSMITH_FILTER__LRU_SIZE": "many"}, ["PROCSMITH_FILTER__LRU_SIZE", "lru_size"]),
        ({"PROCSMITH_A__B__C": "1"}, ["PROCSMITH_A__B__C", "unknown field `a`"]),
        ({"PROCSMITH_SCAN____X": "1"}, ["PROCSMITH_SCAN____X"]),
        ({"PROCSMITH_SCAN__INTERVAL__X": "1"}, ["PROCSMITH_SCAN__INTERVAL__X", "$.scan.interval"]),
    ],
)
def test_env_refused(env: dict[str, str], words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, env)
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize(
    ("text", "seconds"), [("250ms", 0.25), ("2s", 2.0), ("1.5m", 90.0), ("1h", 3600.0), (3, 3.0)]
)
def test_durations(text: str | int, seconds: float) -> None:
    assert Duration.parse(text) == seconds


@pytest.mark.parametrize("text", ["", "2 fortnights", "-1s", "1e3s", "25h", True, None])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        Duration.parse(text)


def test_cli_exit_code_2_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[scan]\nshards = 0\n")
    for args in (
        ["once", "--config", str(path)],
        ["once", "--proc-root", str(tmp_path / "no")],
        ["nonsense"],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", *args],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 2, args
        assert "Traceback" not in proc.stderr
        assert proc.stderr.strip()


def test_named_config_precedence(tmp_path: Path) -> None:

    named, from_env = tmp_path / "named.toml", tmp_path / "env.toml"
    named.write_text("[filter]\nlru_size = 11\n")
    from_env.write_text("[filter]\nlru_size = 22\n")
    env = {"PROCSMITH_CONFIG": str(from_env)}
    assert load_named_config(str(named), env).filter.lru_size == 11
    assert load_named_config(None, env).filter.lru_size == 22
    assert load_named_config(None, {}) == Config()
