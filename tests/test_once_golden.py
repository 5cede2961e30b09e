"""`procsmith once` prints byte for byte what it printed before the scan learned to remember
processes between rounds.

``tests/data/once_golden.jsonl`` is the output of ``procsmith once`` at main 7414758 (the
reader that read every file of every process each round) on the tree ``golden_tree`` builds,
with the tree's root written as ``{root}``. It was made with:

    python -c 'from tests.test_once_golden import golden_tree; from pathlib import Path; \\
        golden_tree(Path("/tmp/g/proc"))'
    PYTHONPATH=<main checkout> python -m pipeline.cli once --proc-root /tmp/g/proc
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from simulation.fakeproc import RING1, SUPERVISOR, FakeProcfs, env_bytes, stat_line
from stages.base.meter import Tally
from stages.shardreader import ShardReader

GOLDEN = Path(__file__).parent / "data" / "once_golden.jsonl"


def golden_tree(root: Path) -> FakeProcfs:
    """Workspaces flat and nested, hostile bytes everywhere, and every kind of skip."""
    fs = FakeProcfs(root)
    fs.add(1, 0, ["/sbin/init"], exe="init")
    fs.add(2, 0, [], comm="kthreadd", exe=None)
    for w in range(3):
        ring1, sup = 100 + 100 * w, 101 + 100 * w
        fs.workspace(ring1, sup, workspace_id=f"ws-{w}", instance_id=f"inst-{w}")
        parent = sup
        for u in range(12):
            pid = ring1 + 2 + u
            argv = ["node", f"w{w}", str(u), "--flag=" + "x" * u]
            fs.add(pid, parent if u % 3 else sup, argv, exe=f"bin{u % 4}")
            parent = pid
    # D6: a nested ring1 and a second `supervisor init` inside workspace 0 are user workloads.
    fs.add(150, 101, RING1, env={"GITPOD_WORKSPACE_ID": "nested"}, exe="workspacekit")
    fs.add(151, 150, SUPERVISOR, exe="supervisor")
    fs.add(152, 151, ["xmrig", "--donate-level", "1"], exe="xmrig")
    # Hostile bytes: comm with ')' and spaces, non-UTF-8 argv, NUL padding, empty arguments.
    fs.add(160, 101, [b"a) b".decode(), "c"], comm=b"x) 1 99 (y")
    fs.add(161, 101, b"sup\xffvisor\0\xe2\x82\0tail\0\0\0\0", comm=b"\xff\xfe")
    fs.add(162, 101, b"a\0\0b\0", exe="bin1")
    fs.add(163, 101, b"", exe=None)  # a zombie: no argv, no executable
    fs.add(164, 101, ["y" * 5_000, "z"], comm="long", exe="bin2")
    # D4: a ring1 with two supervisor children; the earlier-started one is the supervisor.
    fs.add(400, 1, RING1, env={"GITPOD_WORKSPACE_ID": "two-sups", "GITPOD_OWNER_ID": "o"})
    fs.add(401, 400, SUPERVISOR, starttime=9000)
    fs.add(399, 400, SUPERVISOR, starttime=8000)
    fs.add(402, 401, ["vim"])
    fs.add(403, 399, ["emacs"])
    # D5: a value that would smuggle an entry in the reference's 512-byte chunks.
    spoof = b"PAD=" + b"p" * 505 + b"GITPOD_WORKSPACE_ID=spoofed\0"
    fs.add(500, 1, RING1, env=env_bytes({"GITPOD_WORKSPACE_ID": "real"}) + spoof)
    fs.add(501, 500, SUPERVISOR)
    fs.add(502, 501, ["python3", "-c", "print('é')"])
    # A ring1 whose environ cannot be read, and one with no supervisor child: no workspace.
    fs.add(600, 1, RING1)
    (root / "600" / "environ").unlink()
    fs.add(601, 600, SUPERVISOR)
    fs.add(602, 601, ["not-a-workload"])
    fs.add(700, 1, RING1, env={"GITPOD_WORKSPACE_ID": "lonely"})
    fs.add(701, 700, ["sleep"])
    # Skips: malformed stat, starttime 0, a cut stat line, a vanished cmdline, a directory.
    fs.add(800, 101, stat=b"garbage")
    fs.add(801, 101, stat=stat_line(801, "z", 101, 0))
    fs.add(802, 101, stat=b"802 (x) S 101 " + b"0 " * 5000)
    fs.add(803, 101, ["gone"])
    (root / "803" / "cmdline").unlink()
    # Orphans and a cycle outside any workspace, and a child whose pid is below its parent's.
    fs.add(900, 901, ["cycle-a"])
    fs.add(901, 900, ["cycle-b"])
    fs.add(902, 902, ["self-parent"])
    fs.add(90, 101, ["low-pid-child"])
    return fs


def test_once_prints_what_it_printed_before(tmp_path: Path) -> None:
    fs = golden_tree(tmp_path / "proc")
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "once", "--proc-root", str(fs.root)],
        capture_output=True,
        check=True,
    ).stdout
    expected = GOLDEN.read_bytes().replace(b"{root}", str(fs.root).encode())
    assert out == expected


def test_later_rounds_of_an_unchanged_tree_read_the_same_records(tmp_path: Path) -> None:
    """Rounds that re-use remembered records, and those that re-read some in full, give what
    the first round read, which is what a reader without memory reads."""
    fs = golden_tree(tmp_path / "proc")
    reader = ShardReader(str(fs.root), Tally(), recheck_every=4)
    first = reader.read(1)
    assert first.procs == ShardReader(str(fs.root), Tally(), recheck_every=1).read(1).procs
    for round_id in range(2, 12):
        scan = reader.read(round_id)
        assert (scan.procs, scan.skipped) == (first.procs, first.skipped)
    reader.close()
