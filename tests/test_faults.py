"""Faults against a real pipeline (issue 13): a full or read-only disk, a second instance,
a stalled stage, a killed supervisor, HTTP clients that never finish, bad durations."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from pipeline.config import ConfigError, load_config
from pipeline.configschema import TransportConfig
from pipeline.transport import PORT_OFFSET
from simulation.fakeproc import FakeProcfs
from simulation.harness import Pipeline, free_base_port, procsmith, short_run_dir, wait_until
from stages.procfs import is_running

MINER = ["./xmrig", "-o", "pool.example.invalid:3333"]


@contextlib.contextmanager
def small_tmpfs(size: str = "64k") -> Iterator[Path]:
    """A tmpfs of ``size`` of its own, unmounted afterwards (skips where mount is refused)."""
    where = short_run_dir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the filesystem is full; returns it (delete it to free the disk)."""
    filler = disk / "filler"
    with contextlib.suppress(OSError), filler.open("wb", buffering=0) as f:
        while True:
            f.write(b"\0" * 1024)
    return filler


def tree_with_workspace(root: Path) -> FakeProcfs:
    fs = FakeProcfs(root, atomic=True)
    fs.add(1, 0, ["/sbin/init"])
    fs.workspace(10, 11)
    return fs


def pids_in(path: Path) -> list[int]:
    """The pids of the findings in ``path``; every line must be a whole JSON record."""
    return [orjson.loads(line)["process"]["pid"] for line in path.read_bytes().splitlines()]


def test_findings_made_on_a_full_disk_are_all_written_once_it_is_freed(tmp_path: Path) -> None:
    with small_tmpfs() as disk:
        out = disk / "findings.jsonl"
        fs = tree_with_workspace(tmp_path / "proc")
        env = {"PROCSMITH_ENFORCE__OUTPUT": f'["{out}"]', "PROCSMITH_FILTER__ACK_TIMEOUT": "3s"}
        with Pipeline(fs.root, env) as pipe:
            pipe.wait_flowing()
            fs.add(20, 11, MINER)
            wait_until("the first finding", lambda: pids_in(out) == [20], log=pipe.log)
            filler = fill(disk)
            for pid in range(21, 61):
                fs.add(pid, 11, MINER)
            wait_until(
                "write errors",
                lambda: pipe.metrics().get("procsmith_enforce_write_errors_total"),
                log=pipe.log,
            )
            status, body = pipe.health()
            assert status == 503
            assert f"enforce cannot write findings to {out} (ENOSPC)" in body
            filler.unlink()
            wait_until(
                "every finding in the file",
                lambda: set(pids_in(out)) == set(range(20, 61)),
                log=pipe.log,
            )
            wait_until("healthy again", lambda: pipe.health()[0] == 200, log=pipe.log)
            assert pipe.metrics().get("procsmith_enforce_backlog") == 0


def test_an_output_turned_read_only_fails_the_run_instead_of_losing_silently(
    tmp_path: Path,
) -> None:
    with small_tmpfs() as disk:
        out = disk / "findings.jsonl"
        fs = tree_with_workspace(tmp_path / "proc")
        pipe = Pipeline(fs.root, {"PROCSMITH_ENFORCE__OUTPUT": f'["{out}"]'}).start()
        try:
            pipe.wait_flowing()
            subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
            fs.add(20, 11, MINER)
            wait_until(
                "the finding held",
                lambda: pipe.metrics().get("procsmith_enforce_backlog") == 1,
                log=pipe.log,
            )
            status, body = pipe.health()
            assert (status, "(EROFS)" in body) == (503, True)
            assert pipe.stop() == 1  # enforce could not write it: the run says so
        finally:
            if pipe.proc is not None and pipe.proc.poll() is None:
                pipe.proc.kill()
                pipe.proc.wait()


def test_a_second_instance_on_the_same_run_dir_is_refused(tmp_path: Path) -> None:
    fs = tree_with_workspace(tmp_path / "proc")
    with Pipeline(fs.root) as pipe:
        pipe.wait_flowing()
        second = subprocess.run(
            [*procsmith("run", "--proc-root", str(fs.root), "--metrics-addr", "127.0.0.1:0")],
            env=pipe.env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 2
        assert f"in use by another procsmith (pid {pipe.pid})" in second.stderr.decode()
        before = pipe.metrics().get("procsmith_rounds_total")
        wait_until(
            "the first to go on completing rounds",
            lambda: pipe.metrics().get("procsmith_rounds_total") >= before + 3,
            log=pipe.log,
        )
        assert pipe.health()[0] == 200


def test_a_stopped_stage_left_by_a_killed_supervisor_does_not_block_the_next_run(
    tmp_path: Path,
) -> None:
    """Over tcp, with a run directory that does not exist yet: the orphan holds its port
    until the next supervisor clears it."""
    fs = tree_with_workspace(tmp_path / "proc")
    run_dir = short_run_dir() / "absent" / "run"
    env = {
        "PROCSMITH_TRANSPORT__KIND": "tcp",
        "PROCSMITH_TRANSPORT__BASE_PORT": str(free_base_port(len(PORT_OFFSET))),
    }
    if "insecure" in TransportConfig.__struct_fields__:  # where CURVE has landed
        env["PROCSMITH_TRANSPORT__INSECURE"] = "true"
    first = Pipeline(fs.root, env, run_dir=run_dir).start()
    try:
        first.wait_flowing()
        orphan = first.child("filter/0")  # binds its tcp port
        os.kill(orphan, signal.SIGSTOP)
        first.proc.kill()  # type: ignore[union-attr]
        first.proc.wait()  # type: ignore[union-attr]
        assert is_running(orphan)
        (run_dir / "metrics.addr").unlink()  # the killed one's, which the harness waits for
        with Pipeline(fs.root, env, run_dir=run_dir) as second:
            second.wait_flowing()
            fs.add(20, 11, MINER)
            wait_until(
                "a finding",
                lambda: second.out.exists() and second.out.read_bytes(),
                log=second.log,
            )
            assert not is_running(orphan)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(orphan, signal.SIGKILL)


def test_stalled_stages_and_a_missing_shard_are_named_by_health(tmp_path: Path) -> None:
    fs = tree_with_workspace(tmp_path / "proc")
    env = {
        "PROCSMITH_SUPERVISOR__STALL_TIMEOUT": "3s",
        "PROCSMITH_MATCH__SCAN_TIMEOUT": "1s",  # the stall timeout must be longer
        "PROCSMITH_SUPERVISOR__RESTART_STALLED": "false",
    }
    with Pipeline(fs.root, env) as pipe:
        pipe.wait_flowing()
        stopped = [pipe.child("match/0"), pipe.child("match/1"), pipe.child("scan/1")]
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        try:
            named = (
                "match/0 made no progress",
                "match/1 made no progress",
                "scan/1 made no progress",
                "scan shard 1 missing from the last",
            )
            wait_until(
                "health to name the stalled stages and the missing shard",
                lambda: (h := pipe.health())[0] == 503 and all(n in h[1] for n in named),
                log=pipe.log,
            )
            wait_until(
                "both stalls counted",
                lambda: pipe.metrics().get("procsmith_stage_stalls_total", stage="match") == 2,
                log=pipe.log,
            )
        finally:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
        wait_until("healthy again", lambda: pipe.health()[0] == 200, log=pipe.log)


def test_a_stalled_match_is_killed_and_restarted(tmp_path: Path) -> None:
    fs = tree_with_workspace(tmp_path / "proc")
    env = {
        "PROCSMITH_SUPERVISOR__STALL_TIMEOUT": "3s",
        "PROCSMITH_MATCH__SCAN_TIMEOUT": "1s",  # the stall timeout must be longer
        "PROCSMITH_MATCH__REPLICAS": "1",
        "PROCSMITH_FILTER__ACK_TIMEOUT": "2s",
    }
    with Pipeline(fs.root, env) as pipe:
        pipe.wait_flowing()
        stalled = pipe.child("match/0")
        os.kill(stalled, signal.SIGSTOP)
        fs.add(20, 11, MINER)
        wait_until(
            "a new match",
            lambda: pipe.children().get("match/0") not in (None, stalled),
            log=pipe.log,
        )
        m = pipe.metrics()
        assert m.get("procsmith_stage_stalls_total", stage="match") == 1
        assert m.get("procsmith_stage_restarts_total", stage="match") == 1
        line = wait_until("the finding", pipe.out.read_bytes, log=pipe.log)
        assert orjson.loads(line.splitlines()[0])["process"]["pid"] == 20


def slowloris(addr: tuple[str, int], stop: threading.Event, idle: list[socket.socket]) -> None:
    """One client trickling a request a byte at a time, forever; ``idle`` others say nothing."""
    for _ in range(20):
        idle.append(socket.create_connection(addr))
    with socket.create_connection(addr) as s:
        while not stop.wait(0.3):
            with contextlib.suppress(OSError):
                s.send(b"G")


def test_slow_and_idle_http_clients_do_not_hold_up_the_supervisor(tmp_path: Path) -> None:
    fs = tree_with_workspace(tmp_path / "proc")
    with Pipeline(fs.root) as pipe:
        pipe.wait_flowing()
        host, port = (pipe.run_dir / "metrics.addr").read_text().strip().rsplit(":", 1)
        stop, idle = threading.Event(), list[socket.socket]()
        clients = threading.Thread(target=slowloris, args=((host, int(port)), stop, idle))
        clients.start()
        try:
            wait_until("the crowd to connect", lambda: len(idle) == 20)
            assert pipe.health()[0] == 200
            tree = pipe.child("tree/0")
            os.kill(tree, signal.SIGKILL)
            wait_until(
                "tree restarted",
                lambda: pipe.children().get("tree/0") not in (None, tree),
                log=pipe.log,
            )
            wait_until("healthy", lambda: pipe.health()[0] == 200, log=pipe.log)
            dropped = pipe.metrics()
            assert dropped.get("procsmith_http_connections_dropped_total", reason="cap") >= 1
            assert pipe.proc is not None
            pipe.proc.send_signal(signal.SIGTERM)
            assert pipe.proc.wait(timeout=4.0 + 5.0) == 0  # stop_timeout, and a margin
        finally:
            stop.set()
            clients.join(10)
            for s in idle:
                s.close()


@pytest.mark.parametrize("value", ["nan", "inf", "-1s", "1e400"])
def test_a_duration_that_is_not_a_number_of_seconds_is_refused(value: str) -> None:
    env = {**os.environ, "PROCSMITH_SCAN__INTERVAL": value, "PROCSMITH_TREE__GRACE": value}
    for command in (["run", "--metrics-addr", "127.0.0.1:0"], ["once"]):
        done = subprocess.run(
            procsmith(*command), env=env, capture_output=True, timeout=60, check=False
        )
        assert done.returncode == 2, done.stderr
        err = done.stderr.decode()
        assert "$.scan.interval" in err and "$.tree.grace" in err  # each bad key named
        assert "Traceback" not in err


def test_every_bad_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        "[scan]\nshards = 0\ninterval = 'nan'\n[match]\nreplicas = 99\n"
        "[supervisor]\nstall_timeout = '1s'\nbogus = 1\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    for where in ("$.scan.shards", "$.scan.interval", "$.match.replicas", "field `bogus`"):
        assert where in str(err.value)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[supervisor]\nstall_timeout = '5s'\n", "longer than match.scan_timeout"),
    ],
)
def test_bounds_that_depend_on_each_other_are_checked(
    tmp_path: Path, text: str, words: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=words):
        load_config(path)


def test_a_shards_argv_budget_never_exceeds_half_a_frame() -> None:
    from pipeline.bounds import link_hwm, shard_argv_budget  # noqa: PLC0415 - only here

    small = load_config(None, {"PROCSMITH_TRANSPORT__MAX_MESSAGE_BYTES": str(8 << 20)})
    assert shard_argv_budget(small) == 2 << 20  # 4 MiB a round, 2 shards
    assert shard_argv_budget(load_config()) == 32 << 20
    assert link_hwm("tree", load_config()) == 16  # two rounds of 4 MiB parts
    assert link_hwm("match", load_config()) == 64
    assert link_hwm("enforce", load_config()) == 1000
