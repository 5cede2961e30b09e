"""``procsmith demo``: a simulated workspace with a harmless stand-in miner, detected end to end.

It builds the stand-in (a small C program that carries a bundled signature's symbols and
only sleeps), starts ``procsmith run`` on this node's /proc with ``kill-process`` for
``very`` findings and its own run directory and metrics port (so it cannot disturb a
procsmith already running here), starts a simulated workspace whose user runs an "editor"
and the stand-in, plus the same binary outside any workspace, then waits for the finding,
shows it, checks that only the stand-in in the workspace was killed, and cleans up.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from simulation.standin import MINER_C, CompilerMissing, compile_c
from simulation.workspace import SimNode, SimulatedTree, sleeper, workspace
from stages.base import exitcodes
from stages.procfs import is_running

TIMEOUT = 60.0


def _say(text: str) -> None:
    sys.stdout.write(f"procsmith demo: {text}\n")
    sys.stdout.flush()


def _wait(cond: Callable[[], Any], pipeline: subprocess.Popen[bytes]) -> Any:
    """``cond()`` once it is truthy, or ``None`` after TIMEOUT or once the pipeline exits."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if (got := cond()) or pipeline.poll() is not None:
            return got
        time.sleep(0.1)
    return None


def run_demo(config_path: str | None = None) -> int:
    work = Path(tempfile.mkdtemp(prefix="procsmith-demo-"))
    findings = work / "findings.jsonl"
    outside: subprocess.Popen[bytes] | None = None
    pipeline: subprocess.Popen[bytes] | None = None
    try:
        try:
            miner = compile_c(MINER_C, work / "standin-miner")
        except (CompilerMissing, subprocess.CalledProcessError) as err:
            sys.stderr.write(f"procsmith demo: cannot build the stand-in miner: {err}\n")
            return exitcodes.FAILURE
        _say(f"built a harmless stand-in miner (it only sleeps): {miner}")
        env = {
            **os.environ,
            "PROCSMITH_TRANSPORT__RUN_DIR": str(work / "run"),
            "PROCSMITH_SCAN__INTERVAL": "1s",
            "PROCSMITH_ENFORCE__OUTPUT": f'["{findings}"]',
            "PROCSMITH_ENFORCE__PENALTIES__VERY": "kill-process",
        }
        cmd = [sys.executable, "-m", "pipeline.cli", "run", "--metrics-addr", "127.0.0.1:0"]
        if config_path:
            cmd += ["--config", config_path]
        with (work / "pipeline.log").open("wb") as log:
            pipeline = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
        _say(
            f"started the pipeline (pid {pipeline.pid}); penalty for 'very' findings: kill-process"
        )
        outside = subprocess.Popen([str(miner), "--wait"])
        users = [sleeper("editor", "vim"), SimNode("miner", ["build-helper", "--wait"], str(miner))]
        with SimulatedTree(workspace(users, workspace_id="demo-workspace")) as sim:
            p = sim.pids
            _say(
                f"started workspace demo-workspace: ring1 {p['ring1']} -> supervisor init "
                f"{p['supervisor']} -> vim {p['editor']}, build-helper {p['miner']} "
                f"(the stand-in); the same binary outside any workspace: {outside.pid}"
            )
            lines = _wait(lambda: findings.exists() and findings.read_bytes(), pipeline)
            if not lines:
                sys.stderr.write("procsmith demo: no finding arrived; see the pipeline log:\n")
                sys.stderr.write((work / "pipeline.log").read_text()[-2000:])
                return exitcodes.FAILURE
            finding = orjson.loads(lines.splitlines()[0])
            _say("finding:")
            sys.stdout.write(orjson.dumps(finding, option=orjson.OPT_INDENT_2).decode() + "\n")
            killed = _wait(lambda: not is_running(p["miner"]), pipeline)
            spared = [is_running(p["editor"]), outside.poll() is None]
            _say(
                f"the stand-in in the workspace (pid {p['miner']}) was "
                f"{'killed' if killed else 'NOT killed'}; the editor and the same binary outside "
                f"the workspace are {'untouched' if all(spared) else 'NOT untouched'}"
            )
        ok = bool(killed) and all(spared) and finding["process"]["pid"] == p["miner"]
        return exitcodes.OK if ok else exitcodes.FAILURE
    finally:
        if outside is not None:
            outside.kill()
            outside.wait()
        if pipeline is not None and pipeline.poll() is None:
            pipeline.send_signal(signal.SIGTERM)
            pipeline.wait(30)
        _say("stopped the pipeline and every process the demo started")
        shutil.rmtree(work, ignore_errors=True)
