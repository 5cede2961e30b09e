"""pipeline.memory: a process gives back what it no longer needs (issue 11's PSS target)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.configschema import Config
from pipeline.memory import IdleTrim, code_ranges, release_code, trim
from simulation.harness import resident_kib
from stages.signatures import engine_library, load_signatures

LIB = "/opt/lib/yara_x.abi3.so"
SMAPS = f"""\
7f0000000000-7f0000010000 r--p 00000000 fe:00 11 {LIB}
Size:                 64 kB
Anonymous:             0 kB
7f0000010000-7f0000050000 r-xp 00010000 fe:00 11 {LIB}
Rss:                 200 kB
Anonymous:             0 kB
7f0000050000-7f0000060000 r--p 00050000 fe:00 11 {LIB}
Anonymous:            64 kB
7f0000060000-7f0000061000 rw-p 00060000 fe:00 11 {LIB}
Anonymous:             4 kB
7f0000070000-7f0000080000 r-xp 00000000 fe:00 12 /opt/lib/other.so
Anonymous:             0 kB
7f0000090000-7f00000a0000 rw-p 00000000 00:00 0
Anonymous:            64 kB
"""


def test_code_ranges_are_the_librarys_read_only_ranges_never_written() -> None:
    # Not the relocated constants (copied: Anonymous), its data, another library, the heap.
    assert code_ranges(SMAPS, LIB) == [
        (0x7F0000000000, 0x7F0000010000),
        (0x7F0000010000, 0x7F0000050000),
    ]


@given(st.text(max_size=2000), st.sampled_from([LIB, "", "x"]))
def test_code_ranges_take_any_text(smaps: str, library: str) -> None:
    for start, end in code_ranges(smaps, library):
        assert 0 <= start < end


def test_released_code_is_read_again_when_it_runs() -> None:
    signatures = load_signatures([Path(p) for p in Config().match.signatures])
    library = engine_library()
    assert resident_kib("self", library) > 1024  # the compiler ran: megabytes of its code resident
    released = release_code(library)
    assert released > 0
    # What is left resident is only what was written (relocated): nothing of the code.
    assert resident_kib("self", library) < released // 1024 // 4
    hits = signatures.judge_argv(["xmrig", "-o", "stratum+tcp://pool.example:3333"])
    assert hits  # the scanner's code came back from the file


def _heap_kib() -> int:
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            return int(line.split()[1])
    raise AssertionError("no Rss in smaps_rollup")


def test_trim_gives_back_the_free_pages_inside_the_heap() -> None:
    # 40 MiB of 1 KiB blocks (malloc's, not Python's small-object pools), all freed but the
    # last, which keeps them from the top of the heap that free() trims by itself.
    blocks = [os.urandom(1) * 1024 for _ in range(40_000)]
    last = blocks.pop()
    del blocks
    freed = _heap_kib()
    if not trim():
        pytest.skip("not glibc: no malloc_trim")
    after = _heap_kib()
    assert freed - after > 20_000  # most of the 40 MiB went back
    assert len(last) == 1024  # held to here


def test_an_idle_loop_trims_once_after_work_at_most_every_period() -> None:
    idle = IdleTrim(every=1.0)
    assert not idle.due(0.0)  # nothing done yet: nothing to give back
    idle.worked()
    assert idle.due(0.5)
    assert not idle.due(0.6)  # done; no work since
    idle.worked()
    assert not idle.due(1.0)  # worked again, but within the period of the last trim
    assert idle.due(1.5)


_FREEZE = """
import gc, sys, weakref
from pipeline.stagefork import freeze_for_fork

class Node:
    pass

def cycle():
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)

gc.disable()  # only the collections asked for below run
frozen_before = gc.get_freeze_count()
left = cycle()  # garbage made since the last fork, as a restart finds it
freeze_for_fork(collect=True)
kept = cycle()
freeze_for_fork(collect=False)  # a fork of the first start: a freeze alone
gc.collect()
print(left() is None, kept() is None, gc.get_freeze_count() > frozen_before)
"""


def test_a_fork_collects_garbage_before_freezing_it() -> None:
    """A cycle that is garbage when a stage is forked again (a restart) is collected, not
    frozen for good; a freeze alone keeps it (the second cycle, as a first start's forks)."""
    out = subprocess.run(
        [sys.executable, "-c", _FREEZE], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["True", "False", "True"]
