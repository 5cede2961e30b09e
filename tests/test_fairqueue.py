"""match's queue serves workspaces in turn, new executables first (issue 13)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.configschema import BUNDLED_CONFIG_DIR
from stages.base.meter import Tally
from stages.base.schema import Judged, Kind, Process, Workspace
from stages.fairqueue import FairQueue, interleave
from stages.match import Matcher, MatchStage
from stages.signatures import load_signatures


def proc(pid: int, ws: str | None, exe: int = 1) -> Process:
    workspace = Workspace("o", ws, "i", "g", 1) if ws is not None else None
    return Process(
        pid,
        1,
        100 + pid,
        0,
        f"/proc/{pid}/exe",
        [],
        Kind.USER_WORKLOAD,
        workspace,
        exe_dev=1,
        exe_ino=exe,
    )


def drain(q: FairQueue) -> list[Process]:
    out = []
    while (p := q.pop()) is not None:
        out.append(p)
    return out


arrivals = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c", None]), st.integers(1, 4)), max_size=80
)


@given(arrivals)
def test_every_process_once_and_workspaces_in_turn(items: list[tuple[str | None, int]]) -> None:
    q = FairQueue()
    for pid, (ws, exe) in enumerate(items, start=2):
        assert q.push(proc(pid, ws, exe)) is None
    assert len(q) == len(items)
    out = drain(q)
    assert sorted(p.pid for p in out) == list(range(2, len(items) + 2))
    # Round-robin: while a workspace still has processes waiting, no other is served twice
    # before it is served once.
    left = {ws: sum(1 for w, _ in items if w == ws) for ws, _ in items}
    since: dict[str | None, int] = dict.fromkeys(left, 0)
    for p in out:
        ws = p.workspace.workspace_id if p.workspace else None
        for other in list(since):
            if other != ws and left[other]:
                since[other] += 1
                assert since[other] <= len(left)
        since[ws] = 0
        left[ws] -= 1


def test_a_flood_waits_behind_one_turn_of_each_other_workspace() -> None:
    q = FairQueue()
    for pid in range(2, 502):
        q.push(proc(pid, "flood", exe=7))
    q.push(proc(900, "victim", exe=8))
    served = [q.pop() for _ in range(2)]
    assert 900 in [p.pid for p in served if p is not None]


def test_new_executables_go_before_repeats_within_a_workspace() -> None:
    q = FairQueue()
    q.push(proc(2, "a", exe=7))
    assert [p.pid for p in drain(q)] == [2]  # exe 7 has been judged now
    for pid in (3, 4):
        q.push(proc(pid, "a", exe=7))
    q.push(proc(5, "a", exe=9))
    assert [p.pid for p in drain(q)] == [5, 4, 3]  # turns: the oldest, then the newest


def test_when_full_the_workspace_with_the_most_queued_gives_way() -> None:
    q = FairQueue(limit=3)
    assert q.push(proc(2, "a")) is None and q.push(proc(3, "a")) is None
    assert q.push(proc(4, "b")) is None
    refused = q.push(proc(5, "a"))  # a has the most: its own newcomer is refused
    assert refused is not None and refused.pid == 5
    evicted = q.push(proc(6, "c"))  # c has none: a's newest makes room
    assert evicted is not None and evicted.pid == 3
    assert q.push(proc(2, "a")) is None  # already waiting: taken, not queued again
    assert sorted(p.pid for p in drain(q)) == [2, 4, 6]


def test_turns_alternate_between_a_workspaces_oldest_and_newest() -> None:
    q = FairQueue()
    for pid in range(2, 8):
        q.push(proc(pid, "a", exe=pid))
    assert [p.pid for p in drain(q)] == [2, 7, 3, 6, 4, 5]


def test_one_queued_before_its_executable_was_judged_waits_among_the_repeats() -> None:
    q = FairQueue()
    for pid in (2, 3, 4):
        q.push(proc(pid, "a", exe=7))
    q.push(proc(5, "a", exe=9))
    assert [p.pid for p in drain(q)] == [2, 5, 3, 4]


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", None]), st.integers(0, 9)), max_size=60))
def test_interleave_takes_workspaces_in_turn_keeping_each_order(
    items: list[tuple[str | None, int]],
) -> None:
    procs = [proc(pid, ws) for pid, (ws, _) in enumerate(items, start=2)]
    out = interleave(procs)
    assert sorted(p.pid for p in out) == [p.pid for p in procs]
    for ws in {w for w, _ in items}:
        mine = [p.pid for p in procs if (p.workspace.workspace_id if p.workspace else None) == ws]
        assert [
            p.pid for p in out if (p.workspace.workspace_id if p.workspace else None) == ws
        ] == mine
    firsts = out[: len({w for w, _ in items})]
    assert len({p.workspace.workspace_id if p.workspace else None for p in firsts}) == len(firsts)


def test_a_stopping_match_judges_what_it_has_queued() -> None:
    sigs = load_signatures([BUNDLED_CONFIG_DIR / "signatures.json"])
    stage = MatchStage(Matcher(sigs, Tally(), max_exe_bytes=1 << 20, cache_size=8))
    gone = [4_194_305, 4_194_306]  # over the largest pid_max: no such process
    for pid in gone:
        assert stage.handle(proc(pid, "a"), 0.0) == ()
    assert stage.next_tick(0.0) == 0.0
    judged = stage.finish(1.0)
    assert [(r.process.pid, r.outcome) for r in judged if isinstance(r, Judged)] == [
        (gone[0], "vanished"),
        (gone[1], "vanished"),
    ]
    assert stage.next_tick(1.0) is None
