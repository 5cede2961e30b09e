"""The connector parser on hand-built datagrams: the kernel's layouts, and what is not."""

from __future__ import annotations

import struct
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from stages.cnproc import (
    NLMSG_ERROR,
    NLMSG_HDR,
    NLMSG_NOOP,
    NLMSG_OVERRUN,
    PROC_CN_MCAST_LISTEN,
    PROC_EVENT_EXEC,
    PROC_EVENT_EXIT,
    PROC_EVENT_FORK,
    PROC_EVENT_UID,
    Ack,
    Event,
    Exec,
    Exit,
    Fork,
    Lost,
    Other,
    listen_message,
    parse_datagram,
)
from tests import cnbytes


def parse(data: bytes) -> tuple[list[Event], Counter[str]]:
    skipped: Counter[str] = Counter()
    return parse_datagram(data, skipped), skipped


def test_each_event_type_reads_as_the_kernel_lays_it_out() -> None:
    events, skipped = parse(cnbytes.fork(100, 101, ts=7))
    assert events == [Fork(100, 100, 101, 101, 7)]
    assert parse(cnbytes.exec_(101, ts=8))[0] == [Exec(101, 101, 8)]
    assert parse(cnbytes.exit_(101, code=256, parent=100, ts=9))[0] == [
        Exit(101, 101, 256, 17, 100, 9)
    ]
    assert parse(cnbytes.comm(101, b"renamed"))[0] == [Other(0x200, 101, 101)]
    assert parse(cnbytes.ack(43, 1))[0] == [Ack(43, 1)]
    assert not skipped


def test_a_thread_is_a_fork_whose_child_pid_is_not_its_tgid() -> None:
    (event,), _ = parse(cnbytes.fork(100, 105, child_tgid=100))
    assert isinstance(event, Fork)
    assert (event.child_pid, event.child_tgid) == (105, 100)


def test_several_messages_in_one_datagram_are_read_in_order() -> None:
    data = cnbytes.fork(1, 2) + cnbytes.exec_(2) + cnbytes.exit_(2)
    events, skipped = parse(data)
    assert [type(e) for e in events] == [Fork, Exec, Exit]
    assert not skipped


def test_an_exit_body_without_parent_fields_still_reads() -> None:
    """Kernels before the parent fields sent a 16-byte exit body."""
    body = struct.pack("<iiII", 9, 9, 0, 17)
    (event,), _ = parse(cnbytes.message(PROC_EVENT_EXIT, body, pad_union=False))
    assert event == Exit(9, 9, 0, 17, 0, 0)


def test_truncated_and_oversized_lengths_are_counted_and_skipped() -> None:
    whole = cnbytes.exec_(5)
    cases = {
        "truncated_header": whole[:10],
        "bad_length": cnbytes.message(PROC_EVENT_EXEC, b"", nl_len=4096),
        "truncated_cn_msg": NLMSG_HDR.pack(24, 3, 0, 0, 0) + bytes(8),
        "bad_cn_length": cnbytes.message(PROC_EVENT_EXEC, b"", cn_len=1000),
        "truncated_event": cnbytes.message(PROC_EVENT_FORK, b"\1" * 8, cn_len=24),
        "foreign_connector": cnbytes.message(PROC_EVENT_EXEC, b"", idx=7),
        "unknown_type": cnbytes.message(PROC_EVENT_EXEC, b"", kind=0x99),
        "noop": cnbytes.message(PROC_EVENT_EXEC, b"", kind=NLMSG_NOOP),
    }
    for reason, data in cases.items():
        events, skipped = parse(data)
        assert events == [], reason
        assert skipped == Counter({reason: 1}), reason


def test_a_nlmsg_length_shorter_than_its_header_stops_the_walk() -> None:
    data = NLMSG_HDR.pack(3, 3, 0, 0, 0) + cnbytes.exec_(5)
    events, skipped = parse(data)
    assert events == []
    assert skipped == Counter({"bad_length": 1})


def test_a_bad_message_after_good_ones_keeps_the_good_ones() -> None:
    data = cnbytes.exec_(5) + cnbytes.exec_(6)[:30]
    events, skipped = parse(data)
    assert events == [Exec(5, 5, 0)]
    assert skipped == Counter({"bad_length": 1})


def test_overrun_is_a_loss_and_errors_are_counted() -> None:
    overrun = NLMSG_HDR.pack(16, NLMSG_OVERRUN, 0, 0, 0)
    error = NLMSG_HDR.pack(20, NLMSG_ERROR, 0, 0, 0) + struct.pack("<i", -1)
    ok = NLMSG_HDR.pack(20, NLMSG_ERROR, 0, 0, 0) + struct.pack("<i", 0)
    short = NLMSG_HDR.pack(16, NLMSG_ERROR, 0, 0, 0)
    events, skipped = parse(overrun + error + ok + short)
    assert events == [Lost("overrun")]
    assert skipped == Counter({"nlmsg_error": 1, "nlmsg_ack": 1, "truncated_error": 1})


def test_unknown_event_types_are_others() -> None:
    (event,), _ = parse(cnbytes.message(0x400, struct.pack("<ii", 3, 4)))
    assert event == Other(0x400, 3, 4)
    (event,), _ = parse(cnbytes.message(PROC_EVENT_UID, b"", pad_union=False))
    assert event == Other(PROC_EVENT_UID, 0, 0)


def test_the_listen_request_is_the_kernels_layout() -> None:
    raw = listen_message(PROC_CN_MCAST_LISTEN, ack=41)
    assert len(raw) == 16 + 20 + 4
    assert NLMSG_HDR.unpack_from(raw)[:2] == (40, 3)
    assert struct.unpack_from("<IIIIHHI", raw, 16) == (1, 1, 0, 41, 4, 0, 1)


@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_raise_and_every_message_is_accounted(data: bytes) -> None:
    events, skipped = parse(data)
    assert all(isinstance(e, Fork | Exec | Exit | Other | Ack | Lost) for e in events)
    # each message takes at least one header (16 bytes); a walk ends with at most one count
    assert len(events) + sum(skipped.values()) <= len(data) // 16 + 1
    assert all(n > 0 for n in skipped.values())


_GOOD = st.one_of(
    st.builds(cnbytes.exec_, st.integers(1, 2**22)),
    st.builds(cnbytes.fork, st.integers(1, 2**22), st.integers(1, 2**22)),
    st.builds(cnbytes.exit_, st.integers(1, 2**22), st.integers(0, 2**16)),
)
_BAD = st.sampled_from(
    [
        (cnbytes.message(PROC_EVENT_EXEC, b"", idx=9), "foreign_connector"),
        (cnbytes.message(PROC_EVENT_EXEC, b"", cn_len=500), "bad_cn_length"),
        (cnbytes.message(PROC_EVENT_FORK, b"", cn_len=20), "truncated_event"),
        (cnbytes.message(PROC_EVENT_EXEC, b"", kind=0x55), "unknown_type"),
    ]
)


@given(
    st.lists(st.one_of(_GOOD.map(lambda m: (m, "")), _BAD), max_size=20),
    st.binary(max_size=40),
)
def test_concatenated_messages_give_each_good_event_and_count_each_bad_one(
    messages: list[tuple[bytes, str]], tail: bytes
) -> None:
    """A datagram of good and bad messages, then garbage: every good message is an event,
    every bad one is counted under its reason, the garbage at most once."""
    events, skipped = parse(b"".join(m for m, _ in messages) + tail)
    good = sum(1 for _, reason in messages if not reason)
    bad = Counter(reason for _, reason in messages if reason)
    assert len(events) == good  # the tail is shorter than any event (52 bytes)
    assert len(events) + sum(skipped.values()) <= good + bad.total() + 1 + len(tail) // 16
    for reason, n in bad.items():
        assert skipped[reason] >= n
    if not tail:
        assert skipped == bad
