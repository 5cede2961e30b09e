"""Bad config, bad signatures and unusable outputs are refused before anything starts:
exit code 2, a message naming file, key and reason, never a traceback (issue #6)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from simulation.harness import procsmith, short_run_dir

BAD_SIGNATURES = (
    '{"blocklists": {"very": {"signatures": [{"name": "x", "kind": "elf", "pattern": ""}]}}}'
)


def refused(args: list[str], env: dict[str, str], *words: str) -> None:
    full_env = {**os.environ, "PROCSMITH_TRANSPORT__RUN_DIR": str(short_run_dir()), **env}
    proc = subprocess.run(
        procsmith(*args), env=full_env, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in proc.stderr


@pytest.mark.parametrize("args", [["run", "--metrics-addr", "127.0.0.1:0"], ["stage", "match"]])
def test_bad_signature_file(tmp_path: Path, args: list[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(BAD_SIGNATURES)
    env = {"PROCSMITH_MATCH__SIGNATURES": f'["{bad}"]'}
    refused(args, env, "match.signatures", str(bad), "'x'", "pattern")


@pytest.mark.parametrize("args", [["run", "--metrics-addr", "127.0.0.1:0"], ["stage", "match"]])
def test_unreadable_signature_file(tmp_path: Path, args: list[str]) -> None:
    env = {"PROCSMITH_MATCH__SIGNATURES": f'["{tmp_path}/missing.json"]'}
    refused(args, env, "missing.json")


@pytest.mark.parametrize("args", [["run", "--metrics-addr", "127.0.0.1:0"], ["stage", "enforce"]])
def test_unopenable_enforce_output(tmp_path: Path, args: list[str]) -> None:
    env = {"PROCSMITH_ENFORCE__OUTPUT": f'["{tmp_path}/no/such/dir/findings"]'}
    refused(args, env, "enforce.output", "No such file or directory")


def test_exec_penalty_without_a_program() -> None:
    env = {
        "PROCSMITH_ENFORCE__PENALTIES__AUDIT": "exec",
        "PROCSMITH_ENFORCE__EXEC_COMMAND": '["no-such-program-here"]',
    }
    refused(["run"], env, "enforce.exec_command", "no-such-program-here")


def test_run_dir_others_can_enter(tmp_path: Path) -> None:
    run_dir = short_run_dir()
    run_dir.chmod(0o777)
    for args in (["run"], ["stage", "taphub"], ["stage", "tree"]):
        refused(args, {"PROCSMITH_TRANSPORT__RUN_DIR": str(run_dir)}, "mode 0700", str(run_dir))


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"PROCSMITH_SCAN__INTERVAL": "soon"}, ["$.scan.interval", "duration"]),
        ({"PROCSMITH_SCAN__NOPE": "1"}, ["unknown field `nope`"]),
        ({"PROCSMITH_FILTER__LRU_SIZE": "[1]"}, ["$.filter.lru_size"]),
        ({"PROCSMITH_SUPERVISOR__METRICS_ADDR": "nowhere"}, ["nowhere"]),
    ],
)
def test_bad_config_from_the_environment(env: dict[str, str], words: list[str]) -> None:
    refused(["run"], env, *words)


def test_bad_metrics_address() -> None:
    refused(["run", "--metrics-addr", "localhost"], {}, "--metrics-addr", "HOST:PORT")


def test_metrics_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addr = f"127.0.0.1:{taken.getsockname()[1]}"
        refused(["run", "--metrics-addr", addr], {}, f"cannot serve metrics on {addr}", "in use")
