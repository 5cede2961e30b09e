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


TCP = {"PROCSMITH_TRANSPORT__KIND": "tcp"}


@pytest.mark.parametrize("args", [["run"], ["stage", "tree"], ["stage", "taphub"], ["tap"]])
def test_tcp_without_keys_is_refused(args: list[str]) -> None:
    """Issue #12: unauthenticated tcp only when the config says so (insecure = true)."""
    refused(args, TCP, "transport.keys_dir", "procsmith keys generate", "transport.insecure")


@pytest.mark.parametrize("args", [["run"], ["stage", "enforce"], ["tap"]])
def test_tcp_with_a_key_directory_that_is_not_there(tmp_path: Path, args: list[str]) -> None:
    missing = tmp_path / "no-keys"
    refused(args, {**TCP, "PROCSMITH_TRANSPORT__KEYS_DIR": str(missing)}, str(missing))


def test_tcp_with_keys_missing_a_secret(tmp_path: Path) -> None:
    from pipeline.keyring import generate_keys  # noqa: PLC0415 - loads zmq

    keys = tmp_path / "keys"
    generate_keys(keys)
    (keys / "tree.key_secret").unlink()
    env = {**TCP, "PROCSMITH_TRANSPORT__KEYS_DIR": str(keys)}
    refused(["stage", "tree"], env, "tree.key_secret")


def test_run_dir_through_a_symlink(tmp_path: Path) -> None:
    """A symlink to a private directory (here one of another uid's, as an attacker would
    leave it, and one of our own) is refused, wherever it is in the path."""
    for owner in (65534, os.geteuid()):
        target = short_run_dir()
        os.chown(target, owner, -1)
        link = short_run_dir() / "link"
        link.symlink_to(target)
        for run_dir in (link, link / "sub"):
            for args in (["run"], ["stage", "tree"]):
                refused(args, {"PROCSMITH_TRANSPORT__RUN_DIR": str(run_dir)}, "symlink")
        assert not (target / "sub").exists()
