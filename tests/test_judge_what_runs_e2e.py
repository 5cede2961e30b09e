"""Issue 11: what a process actually runs is judged — each row of the issue's table tried
against the whole pipeline on this machine's /proc, with stand-ins built here (they only
sleep). One pipeline run carries every row and a busy benign workspace of over 300 processes,
which must give no finding at all.

Row 8 (a user's FUSE mount, which root cannot read) needs a FUSE filesystem; the unjudgeable
finding it would give is tested on a fake tree in tests/test_matcher.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from simulation.harness import Pipeline, Tap, tapping, wait_until
from simulation.standin import MINER_STRINGS, Tricks
from simulation.workspace import SimNode, SimulatedTree, python_node, workspace

pytestmark = pytest.mark.realproc

LDSO = "/lib64/ld-linux-x86-64.so.2"
POOL = "stratum+tcp://pool.example.invalid:3333"
WS, BENIGN = "ws-tricks", "ws-benign"
BASH = shutil.which("bash") or "/bin/bash"
NODE = shutil.which("node")
SLEEP = shutil.which("sleep") or "/bin/sleep"


@pytest.fixture(scope="module")
def tricks(tmp_path_factory: pytest.TempPathFactory) -> Tricks:
    return Tricks(tmp_path_factory.mktemp("tricks"))


def findings(path: Path) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    if path.exists():
        for line in path.read_bytes().splitlines():
            f = orjson.loads(line)
            out.setdefault(f["process"]["pid"], []).append(f)
    return out


def judged_clean(tap: Tap, pid: int) -> bool:
    return any(
        r["record"]["outcome"] == "clean" and r["record"]["process"]["pid"] == pid
        for r in tap.of("match", "judged")
    )


def waiting(label: str, argv: list[str], exe: Path, **env: str) -> SimNode:
    return SimNode(label, argv, str(exe), {"STANDIN_WAIT": "1", **env})


def trick_nodes(t: Tricks, tmp: Path) -> list[SimNode]:
    script = tmp / "miner.py"
    script.write_text(f"import time\n{MINER_STRINGS}\ntime.sleep(86400)\n")
    shell = tmp / "miner.sh"
    shell.write_text(f"# {MINER_STRINGS}\nsleep 86400\n")
    padded = (
        "import os, sys; os.execv(sys.argv[1], ['tool'] + ['x' * 30000] * 10"
        " + ['stratum' + '+tcp://pool.example.invalid:3333'])"
    )
    # bash that, on SIGUSR1, execs bash again with a pool URL in its argv (put together at
    # run time, so the first bash's own argv holds none).
    bash_loop = (
        "trap 'p=stratum; exec bash -c \"sleep 86400; : ${p}+tcp://pool.example.invalid:3333\"'"
        " USR1; while :; do sleep 0.2 & wait; done"
    )
    tool = tmp / "tool"
    shutil.copyfile(t.clean_twin, tool)
    tool.chmod(0o755)
    miner = t.tricks.parent / "miner"
    return [
        SimNode("ldso", [LDSO, str(miner), "--wait"], LDSO),  # 1
        SimNode("ldso_argv0", [LDSO, "--argv0", "vim", str(miner), "--wait"], LDSO),  # 1
        SimNode("pyscript", ["python3", str(script)], sys.executable),  # 2
        SimNode("shscript", ["bash", str(shell)], BASH),  # 2
        SimNode("preload", ["sleep", "86400"], SLEEP, {"LD_PRELOAD": str(t.libminer)}),  # 3
        SimNode(
            "dlopener",
            ["worker"],
            str(t.tricks),
            {"STANDIN_MODE": "dlopen", "STANDIN_LIB": str(t.libminer)},
        ),  # 3
        SimNode(
            "memfd",
            ["worker"],
            str(t.tricks),
            {"STANDIN_MODE": "memfd", "STANDIN_PAYLOAD": str(t.payload)},
        ),  # 3
        SimNode(
            "padded",
            ["python3", "-c", padded, str(t.clean_twin)],
            sys.executable,
            {"STANDIN_WAIT": "1"},
        ),  # 4
        SimNode(
            "rewriter", ["clean-tool", "-" * 80], str(t.tricks), {"STANDIN_MODE": "rewrite"}
        ),  # 5
        python_node(  # 6: python execs python, same executable
            "pyexec",
            ["python3", "pyexec"],
            [],
            exec_on_usr1=(
                sys.executable,
                ["python3", "-c", "import time; time.sleep(86400)", "-o", POOL],
            ),
        ),
        SimNode("shexec", ["bash", "-c", bash_loop], BASH),  # 6: bash execs bash
        SimNode("first", ["tool", "--wait"], str(tool)),  # 7: judged clean, then it goes
        python_node(
            "again", ["python3", "again"], [], exec_on_usr1=(str(tool), ["tool", "--wait"])
        ),
        waiting(
            "noscheme", ["worker", "-o", "pool.supportxmr.com:3333", "-u", "4Abc"], t.clean_twin
        ),  # 9
        SimNode("zombie", ["worker"], str(t.tricks_miner), {"STANDIN_MODE": "zombie"}),  # 10
        SimNode("big", ["tool", "--wait"], str(t.big)),  # 11
    ]


def benign_nodes(t: Tricks, tmp: Path) -> list[SimNode]:
    """An editor, language servers, compilers, python and node: 300 and more processes."""
    manage = tmp / "manage.py"
    manage.write_text("import json, time\nprint(json.dumps({'ok': True}))\ntime.sleep(86400)\n")
    build = tmp / "build.sh"
    build.write_text("#!/bin/bash\n# build the project\nsleep 86400\n")
    server = tmp / "server.js"
    server.write_text("const http = require('http');\nsetTimeout(() => {}, 86400000);\n")
    nodes = [
        SimNode("py-manage", ["python3", str(manage), "runserver"], sys.executable),
        SimNode("py-c", ["python3", "-c", "import time; time.sleep(86400)"], sys.executable),
        SimNode("sh-build", ["bash", str(build)], BASH),
    ]
    if NODE is not None:
        nodes.append(SimNode("node-server", ["node", str(server)], NODE))
        nodes.append(SimNode("node-e", ["node", "-e", "setTimeout(() => {}, 86400000)"], NODE))
    tools = [
        ["vim", "src/main.py"],
        ["code-server", "--port", "13444", "--host", "127.0.0.1", "/workspace/repo"],
        ["gopls", "-mode=stdio"],
        ["pyright-langserver", "--stdio"],
        ["tsserver", "--useInferredProjectPerProjectRoot", "--locale", "en"],
        ["rust-analyzer"],
        ["cc1", "-quiet", "-I", "include", "src/pool.c", "-O2", "-o", "/tmp/ccX.s"],
        ["ld", "-o", "build/app", "build/main.o", "-lpthread"],
        ["make", "-j4", "all"],
        ["cargo", "build", "--release"],
        ["rustc", "--crate-name", "mining_sim", "src/lib.rs"],
        ["git", "fetch", "origin", "main"],
    ]
    for i in range(300):
        argv = tools[i % len(tools)]
        nodes.append(waiting(f"tool{i}", [*argv, f"--n={i}"], t.clean_twin))
    return nodes


def test_what_actually_runs_is_judged(tricks: Tricks, tmp_path: Path) -> None:
    pipe = Pipeline("/proc", {"PROCSMITH_MATCH__MAX_EXE_BYTES": str(1 << 20)})
    out = pipe.run_dir / "findings.jsonl"
    pipe.env["PROCSMITH_ENFORCE__OUTPUT"] = f'["{out}"]'
    tricky = workspace(trick_nodes(tricks, tmp_path), workspace_id=WS)
    benign = workspace(benign_nodes(tricks, tmp_path), workspace_id=BENIGN)
    with (
        pipe,
        tapping(
            pipe, "match", "filter"
        ) as tap,  # before the processes start: it sees every verdict
        SimulatedTree(tricky, ready_timeout=60) as sim,
        SimulatedTree(benign, 120) as ok,
    ):
        p = sim.pids
        for pid in (p["dlopener"], p["first"], p["pyexec"], p["shexec"]):
            wait_until(f"{pid} judged clean", lambda: judged_clean(tap, pid), 60, pipe.log)  # noqa: B023
        # 3: dlopen after being judged. 6: exec of the same interpreter.
        for label in ("dlopener", "pyexec", "shexec"):
            os.kill(p[label], signal.SIGUSR1)
        # 7: the program goes, its file is rewritten in place (same inode, same size, mtime
        # set back), and another process execs it.
        tool = tmp_path / "tool"
        before = tool.stat()
        os.kill(p["first"], signal.SIGKILL)
        wait_until("the first tool gone", lambda: not Path(f"/proc/{p['first']}").exists(), 10)
        with tool.open("r+b") as f:
            f.write(tricks.miner_twin.read_bytes())
        os.utime(tool, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert (tool.stat().st_ino, tool.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
        os.kill(p["again"], signal.SIGUSR1)

        miner = str(tricks.tricks.parent / "miner")
        want = {  # label: (file_role, file or None when it names no file, classifier)
            "ldso": ("mapping", miner, "signature"),
            "ldso_argv0": ("mapping", miner, "signature"),
            "pyscript": ("script", str(tmp_path / "miner.py"), "signature"),
            "shscript": ("script", str(tmp_path / "miner.sh"), "signature"),
            "preload": ("mapping", str(tricks.libminer), "signature"),
            "dlopener": ("mapping", str(tricks.libminer), "signature"),
            "memfd": ("mapping", "/memfd:payload (deleted)", "signature"),
            "padded": ("cmdline", "", "commandline"),
            "rewriter": ("cmdline", "", "commandline"),
            "pyexec": ("cmdline", "", "commandline"),
            "shexec": ("cmdline", "", "commandline"),
            "again": ("exe", str(tool), "signature"),
            "noscheme": ("cmdline", "", "commandline"),
            "zombie": ("exe", str(tricks.tricks_miner), "signature"),
            "big": ("exe", str(tricks.big), "signature"),
        }

        def missing() -> dict[str, list[tuple[str, str, str]]]:
            got = findings(out)
            return {
                label: [_as(f) for f in got.get(p[label], [])]
                for label, wanted in want.items()
                if not any(_as(f) == wanted for f in got.get(p[label], []))
            }

        try:
            wait_until(
                "a finding for every row but 5", lambda: missing().keys() <= {"rewriter"}, 90
            )
            # Row 5 is seen at the process's next full re-read: every 30 s of scan rounds
            # (150 rounds of 200 ms; longer in wall time when a loaded machine slows them).
            wait_until("a finding for row 5", lambda: not missing(), 120)
        except AssertionError:
            gone = {p[k] for k in missing()}
            seen = [
                (r["stage"], r["type"], r["record"].get("process", r["record"]).get("cmdline"))
                for r in tap.of("filter") + tap.of("match")
                if r["record"].get("process", r["record"]).get("pid") in gone
            ]
            alive = {pid: Path(f"/proc/{pid}/cmdline").exists() for pid in gone}
            raise AssertionError(
                f"rows without their finding: {missing()}; tap: {seen}; alive: {alive}"
            ) from None
        got = findings(out)
        for label, wanted in want.items():
            match = next(f for f in got[p[label]] if _as(f) == wanted)
            assert match["process"]["workspace"]["workspace_id"] == WS, label
        assert "xmrig" in got[p["rewriter"]][-1]["process"]["cmdline"]
        # (A process judged again — its maps changed once its loader mapped the libraries,
        # D10 — gives the same finding again: the same signature, never another.)
        assert {f["signature"] for f in got[p["noscheme"]]} == {"supportxmr.com"}
        assert {f["signature"] for f in got[p["big"]]} == {"stratum-methods"}  # past the head
        # No regression: the benign workspace, every process of it judged, gave nothing.
        benign_pids = {
            pid for label, pid in ok.pids.items() if label not in ("ring1", "supervisor")
        }
        wait_until(
            "every benign process judged",
            lambda: (
                benign_pids
                <= {
                    pid
                    for pid, proc in tap.judged().items()
                    if proc["workspace"]["workspace_id"] == BENIGN
                }
            ),
            60,
            pipe.log,
        )
        got = findings(out)
        assert not benign_pids & got.keys(), [got[x] for x in benign_pids & got.keys()]
        assert len(benign_pids) >= 300


def _as(finding: dict[str, Any]) -> tuple[str, str, str]:
    return finding["file_role"], finding["file"], finding["classifier"]


def test_fuse_mount_root_cannot_read() -> None:
    """Row 8: an executable on the user's own FUSE mount."""
    have_fuse = os.path.exists("/dev/fuse")
    have_tools = shutil.which("fusermount") or shutil.which("fusermount3")
    if not (have_fuse and have_tools):
        pytest.skip(
            "row 8 needs a FUSE filesystem mounted by an unprivileged user: "
            f"/dev/fuse {'is' if have_fuse else 'is not'} here, but neither fusermount nor a "
            "Python FUSE module is installed (the unjudgeable finding it gives is tested on a "
            "fake tree: test_matcher.py::test_unreadable_executable_is_an_unjudgeable_finding)"
        )
    pytest.skip("a FUSE server for this test is not written yet")  # pragma: no cover
