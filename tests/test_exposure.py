"""Least exposure (issue #6): what procsmith opens to others by default."""

from __future__ import annotations

import stat
from pathlib import Path

from pipeline.config import load_config
from pipeline.configschema import Config
from simulation.fakeproc import FakeProcfs
from simulation.harness import Pipeline, short_run_dir


def test_defaults_bind_to_loopback_only() -> None:
    config = load_config()  # the defaults, which the bundled file equals
    assert config.supervisor.metrics_addr.startswith("127.0.0.1:")
    assert config.transport.bind_host == "127.0.0.1"  # tcp endpoints, the tap's included
    assert config.transport.kind == "ipc"
    assert (config.enforce.penalties.very, config.enforce.penalties.audit) == ("log", "log")
    assert config.enforce.penalties.barely == "log"  # nothing is killed unless configured
    assert Config() == config


def test_run_directory_is_private(tmp_path: Path) -> None:
    fs = FakeProcfs(tmp_path / "proc")
    fs.add(1, 0, ["/sbin/init"])
    run_dir = short_run_dir() / "fresh"  # does not exist yet: procsmith creates it
    with Pipeline(fs.root, run_dir=run_dir) as pipe:
        pipe.wait_flowing()
        mode = stat.S_IMODE(run_dir.stat().st_mode)
        assert mode == 0o700, oct(mode)
        sockets = sorted(p.name for p in run_dir.iterdir() if p.is_socket())
        assert sockets == [
            "classify.sock", "enforce.sock", "filter.sock", "match.sock",
            "tap-in.sock", "tap-out.sock", "tree.sock",
        ]  # fmt: skip
        assert stat.S_IMODE((run_dir / "metrics").stat().st_mode) == 0o700
