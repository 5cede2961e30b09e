"""The [match] and [enforce] config sections: defaults and path resolution.

Their refusals are among the cases of tests/test_config.py."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import load_config
from pipeline.configschema import BUNDLED_CONFIG_DIR, Config


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


def test_exec_penalty_with_a_command() -> None:
    env = {
        "PROCSMITH_ENFORCE__PENALTIES": '{very = "exec", audit = "kill-process"}',
        "PROCSMITH_ENFORCE__EXEC_COMMAND": '["/usr/bin/notify", "--json"]',
    }
    config = load_config(None, env)
    assert config.enforce.penalties.very == "exec"
    assert config.enforce.penalties.audit == "kill-process"
    assert config.enforce.penalties.barely == "log"
