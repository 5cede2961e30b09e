"""What users install: the wheel, in a fresh venv outside the checkout, run from elsewhere.

The bundled config and signatures must come from the installed package, not from a
``config/`` folder beside the code (an editable install would hide that).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from simulation.fakeproc import FakeProcfs
from simulation.harness import Pipeline

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The venv's bin/ with procsmith installed from a freshly built wheel."""
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(work), str(ROOT)],
        check=True,
        timeout=600,
    )
    (wheel,) = work.glob("procsmith-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
        check=True,
        timeout=600,
    )
    yield venv / "bin"


def run(bin_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Nothing of the checkout may leak in: no PYTHONPATH, and a working directory elsewhere.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PROCSMITH"))}
    return subprocess.run(
        [str(bin_dir / args[0]), *args[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def bundled_dir(bin_dir: Path, cwd: Path) -> Path:
    done = run(
        bin_dir,
        cwd,
        "python",
        "-c",
        "import pipeline.configschema as c; print(c.BUNDLED_CONFIG_DIR)",
    )
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip())


def test_the_wheel_carries_its_config_and_runs_from_anywhere(
    installed: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    bundled = bundled_dir(installed, elsewhere)
    signatures = str(bundled / "signatures.json")
    assert bundled.is_relative_to(installed.parent), bundled  # inside the venv, not the checkout
    assert (bundled / "signatures.json").is_file() and (bundled / "procsmith.toml").is_file()

    version = run(installed, elsewhere, "procsmith", "--version")
    assert (version.returncode, version.stdout.split()[0]) == (0, "procsmith")

    check = run(installed, elsewhere, "procsmith", "signatures", "check", signatures)
    assert check.returncode == 0 and ": ok: " in check.stdout, check.stderr

    match = run(installed, elsewhere, "procsmith", "match", "--signatures", signatures, "/bin/true")
    assert (match.returncode, match.stdout, match.stderr) == (0, "", "")

    fs = FakeProcfs(tmp_path / "proc")
    fs.add(1, 0, ["/sbin/init"])
    fs.workspace(10, 11)
    fs.add(20, 11, ["node", "server.js"])
    once = run(installed, elsewhere, "procsmith", "once", "--proc-root", str(fs.root))
    assert once.returncode == 0, once.stderr
    assert [orjson.loads(line)["pid"] for line in once.stdout.splitlines()] == [20]


def test_the_wheel_runs_the_pipeline(installed: Path, tmp_path: Path) -> None:
    """`procsmith run` from the wheel: two rounds complete, then SIGTERM ends it with 0
    (leaving the context checks the exit code and that no stage is left behind)."""
    fs = FakeProcfs(tmp_path / "proc")
    fs.add(1, 0, ["/sbin/init"])
    fs.workspace(10, 11)
    fs.add(20, 11, ["node", "server.js"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with Pipeline(fs.root, program=[str(installed / "procsmith")], cwd=elsewhere) as pipe:
        pipe.wait_flowing(rounds=2)
        assert pipe.metrics().get("procsmith_stage_records_in_total", stage="match") >= 1
