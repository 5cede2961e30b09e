"""enforce holds what it cannot write, on real files of this machine (issue 13)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from stages.base.catalog import (
    ENFORCE_BACKLOG,
    ENFORCE_BACKLOG_REFUSED,
    ENFORCE_OUTPUT_FAILING,
    ENFORCE_WRITE_ERRORS,
)
from stages.base.meter import Tally
from stages.base.schema import Finding, Judged, Kind, Level, Process
from stages.enforce import Enforcer, EnforceStage
from stages.outputs import FileOutput, WriteFailed


def finding(pid: int) -> Finding:
    proc = Process(pid, 1, 1000 + pid, 0, f"/proc/{pid}/exe", ["xmrig"], Kind.USER_WORKLOAD)
    return Finding(proc, "xmrig", Level.VERY, "commandline", datetime.now(UTC))


def judged_pids(records: Sequence[object]) -> list[int]:
    return [r.process.pid for r in records if isinstance(r, Judged)]


@pytest.fixture
def failing(tmp_path: Path) -> Path:
    """An output path that is /dev/full for now (every write: ENOSPC)."""
    path = tmp_path / "findings.jsonl"
    path.symlink_to("/dev/full")
    return path


def heal(path: Path) -> None:
    path.unlink()
    path.write_bytes(b"")


def test_held_until_written_then_acknowledged(failing: Path, tally: Tally) -> None:
    e = Enforcer(tally, "/proc", outputs=[str(failing)], backlog=10, retry_interval=0.0)
    assert judged_pids(e.handle(finding(7), 0.0)) == []
    assert judged_pids(e.handle(finding(8), 0.0)) == []
    assert tally.get(ENFORCE_BACKLOG) == 2
    assert tally.get(ENFORCE_OUTPUT_FAILING, output=str(failing), reason="ENOSPC") == 1
    assert judged_pids(e.retry(1.0)) == []  # still full
    heal(failing)
    assert judged_pids(e.retry(2.0)) == [7, 8]
    assert tally.get(ENFORCE_BACKLOG) == 0
    assert tally.get(ENFORCE_OUTPUT_FAILING, output=str(failing), reason="ENOSPC") == 0
    lines = failing.read_bytes().splitlines()
    assert [orjson.loads(line)["process"]["pid"] for line in lines] == [7, 8]


def test_the_same_process_offered_again_is_held_once(failing: Path, tally: Tally) -> None:
    e = Enforcer(tally, "/proc", outputs=[str(failing)], backlog=10)
    e.handle(finding(7), 0.0)
    e.handle(finding(7), 1.0)
    assert tally.get(ENFORCE_BACKLOG) == 1


def test_a_full_backlog_leaves_the_finding_unacknowledged(failing: Path, tally: Tally) -> None:
    e = Enforcer(tally, "/proc", outputs=[str(failing)], backlog=2)
    for pid in (1, 2, 3):
        assert judged_pids(e.handle(finding(pid), 0.0)) == []
    assert tally.get(ENFORCE_BACKLOG) == 2
    assert tally.get(ENFORCE_BACKLOG_REFUSED) == 1
    heal(failing)
    assert judged_pids(e.retry(1.0)) == [1, 2]  # 3 was never held: the filter offers it again


def test_only_the_outputs_that_failed_are_written_again(failing: Path, tally: Tally) -> None:
    out = io.BytesIO()
    e = Enforcer(tally, "/proc", outputs=["-", str(failing)], stdout=out)
    e.handle(finding(7), 0.0)
    heal(failing)
    assert judged_pids(e.retry(1.0)) == [7]
    assert len(out.getvalue().splitlines()) == 1  # stdout had it the first time
    assert len(failing.read_bytes().splitlines()) == 1


def test_what_is_held_at_stop_makes_the_stage_fail(failing: Path, tally: Tally) -> None:
    stage = EnforceStage(Enforcer(tally, "/proc", outputs=[str(failing)]))
    stage.handle(finding(7), 0.0)
    assert stage.next_tick(0.0) is not None
    assert stage.finish(1.0) == []
    assert stage.failure() == "1 findings could not be written out"
    assert tally.get(ENFORCE_WRITE_ERRORS) == 2  # the finding, and the last try at stop


def test_a_write_that_fails_half_way_leaves_no_torn_line(tmp_path: Path) -> None:
    """RLIMIT_FSIZE cuts a write at the limit (the rest raises EFBIG, SIGXFSZ ignored): the
    part that got out is taken back."""
    path = tmp_path / "f"
    path.write_bytes(b"first\n")
    code = (
        "import resource, signal, sys\n"
        "from stages.outputs import FileOutput, WriteFailed\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))\n"
        "try:\n"
        f"    FileOutput({str(path)!r}).write(b'x' * 200 + b'\\n')\n"
        "except WriteFailed as err:\n"
        "    sys.exit(err.reason)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.stderr.strip() == "EFBIG"
    assert path.read_bytes() == b"first\n"


def test_file_output_refuses_a_directory(tmp_path: Path) -> None:
    with pytest.raises(WriteFailed) as err:
        FileOutput(str(tmp_path)).write(b"x\n")
    assert err.value.reason == "EISDIR"
    assert os.listdir(tmp_path) == []
