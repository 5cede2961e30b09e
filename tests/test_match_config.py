"""The [match] and [enforce] config sections: defaults, path resolution, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import BUNDLED_CONFIG_DIR, Config, ConfigError, load_config


def test_defaults() -> None:
    config = Config()
    assert config.match.signatures == [str(BUNDLED_CONFIG_DIR / "signatures.json")]
    assert Path(config.match.signatures[0]).is_file()
    assert (config.match.replicas, config.match.delay) == (2, 0.0)
    assert config.enforce.output == ["-"]
    # Nothing is killed unless configured.
    penalties = config.enforce.penalties
    assert (penalties.very, penalties.audit, penalties.barely) == ("log", "log", "log")


def test_relative_signature_paths_follow_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "procsmith.toml"
    path.parent.mkdir()
    path.write_text('[match]\nsignatures = ["sigs/a.json", "/abs/b.yar"]\n')
    config = load_config(path)
    assert config.match.signatures == [str(tmp_path / "conf" / "sigs" / "a.json"), "/abs/b.yar"]


def test_relative_signature_paths_without_a_file_follow_the_bundled_dir() -> None:
    config = load_config(None, {"PROCSMITH_MATCH__SIGNATURES": '["extra.yar"]'})
    assert config.match.signatures == [str(BUNDLED_CONFIG_DIR / "extra.yar")]


@pytest.mark.parametrize(
    ("text", "words"),
    [
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
def test_refused(tmp_path: Path, text: str, words: list[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    for word in [str(path), *words]:
        assert word in str(err.value), str(err.value)


def test_exec_penalty_with_a_command() -> None:
    env = {
        "PROCSMITH_ENFORCE__PENALTIES": '{very = "exec", audit = "kill-process"}',
        "PROCSMITH_ENFORCE__EXEC_COMMAND": '["/usr/bin/notify", "--json"]',
    }
    config = load_config(None, env)
    assert config.enforce.penalties.very == "exec"
    assert config.enforce.penalties.audit == "kill-process"
    assert config.enforce.penalties.barely == "log"
