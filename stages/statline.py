"""Parsers of a ``/proc/<pid>/stat`` line: what identifies the process (``parse_stat``),
what an exec changes (``exec_marks``), and a field by its number; each splits the line as
little as its caller needs, since the scan parses a stat line for every process it reads.

Like the other procfs parsers (``stages.procfs``), they raise nothing on any input: comm is
the process's own choice of bytes, and a fake tree's line may be anything.
"""

from __future__ import annotations

import msgspec
import xxhash

from stages.procfs import STAT_MAX_BYTES, decode

_U64_MAX = 2**64 - 1
_U64_DIGITS = 20  # checked before int(): a 5,000-digit "number" must not reach int()
_PF_FORKNOEXEC = 0x40  # task flag: forked and not yet exec'd (include/linux/sched.h)
# Fields are split off up to the last exec mark (field 51, env_end) and no further.
_MARKS_SPLIT = 51 - 2


class Stat(msgspec.Struct, frozen=True, gc=False):
    """What the detector takes from a stat line (a Struct: it is made for every process)."""

    ppid: int
    starttime: int
    comm: str


def _u64(field: bytes) -> int | None:
    if not field.isdigit() or len(field) > _U64_DIGITS:  # bytes.isdigit is ASCII-only
        return None
    value = int(field)
    return value if value <= _U64_MAX else None


def parse_stat(data: bytes) -> Stat | None:
    """ppid (field 4) and starttime (field 22) of a ``/proc/<pid>/stat`` line.

    D1: comm (field 2) may hold spaces, parentheses and any byte, so fields are counted after
    the *last* ``)``. ``None`` when the line cannot be parsed, is longer than any the kernel
    writes (``STAT_MAX_BYTES``: it was cut, so its end is not its end), or starttime is 0.
    """
    # Only the first 20 fields are split off: the rest is not needed here.
    head = _split(data, 20)
    if head is None:
        return None
    close, _, ppid, starttime = head
    return Stat(ppid, starttime, _comm(data, close))


def _split(data: bytes, maxsplit: int) -> tuple[int, list[bytes], int, int] | None:
    """The last ``)``, the fields after it (``fields[0]`` is the state, field 3, so field N
    is ``fields[N - 3]``), ppid and starttime; ``None`` where ``parse_stat`` says so."""
    if len(data) > STAT_MAX_BYTES:
        return None
    close = data.rfind(b")")
    if close < 0:
        return None
    fields = data[close + 1 :].split(None, maxsplit)
    if len(fields) < 20:
        return None
    ppid = _u64(fields[1])
    starttime = _u64(fields[19])
    if ppid is None or not starttime:
        return None
    return close, fields, ppid, starttime


def _comm(data: bytes, close: int) -> str:
    open_ = data.find(b"(")
    return decode(data[open_ + 1 : close] if 0 <= open_ < close else b"")


def exec_marks(data: bytes) -> tuple[bytes, ...]:
    """The parts of a stat line that an ``execve`` changes and little else does.

    comm (set to the new program's name), starttime (so a reused pid differs too), the
    PF_FORKNOEXEC flag (cleared by the first exec after a fork), and the addresses of the new
    memory image: start/end of code, start of stack (fields 26-28), start/end of data, start
    of brk, start/end of argv and environment (fields 45-51). With address-space layout
    randomisation each exec moves the stack, argv and environment, so these differ; a
    process that disables it (``setarch -R``) and execs a program of identical layout,
    name and argument sizes is not told apart here (the scan's periodic full re-read is
    what bounds that case). Raises nothing: a malformed line gives whatever it holds.
    """
    close = data.rfind(b")")
    return _marks(data, close, data[close + 1 :].split(None, _MARKS_SPLIT))


def _marks(data: bytes, close: int, fields: list[bytes]) -> tuple[bytes, ...]:
    flags = fields[6] if len(fields) > 6 else b""
    if flags.isdigit() and len(flags) <= _U64_DIGITS:
        flags = b"1" if int(flags) & _PF_FORKNOEXEC else b"0"
    return (
        data[:close],
        fields[19] if len(fields) > 19 else b"",
        flags,
        *fields[23:26],
        *fields[42:49],
    )


def marks_digest(marks: tuple[bytes, ...]) -> int:
    """The exec generation (``exec_id``) the marks of one exec give."""
    return xxhash.xxh64_intdigest(b"\0".join(marks))


class StatLine(msgspec.Struct, frozen=True, gc=False):
    """What a process's first read takes from its stat line, from one split of it: ``Stat``'s
    fields, the exec generation (``marks_digest`` of ``exec_marks``) and the task's flags
    (field 9)."""

    ppid: int
    starttime: int
    comm: str
    exec_id: int
    flags: int


def stat_number(fields: list[bytes], index: int) -> int:
    """Field ``index`` (as proc(5) numbers them) as an int; 0 when absent or odd."""
    value = _u64(fields[index - 3]) if len(fields) > index - 3 else None
    return value or 0


def parse_stat_line(data: bytes) -> StatLine | None:
    """``parse_stat`` and the exec facts of the same line (``None`` exactly when
    ``parse_stat`` is): the first read of a process splits its line once, not thrice."""
    head = _split(data, _MARKS_SPLIT)
    if head is None:
        return None
    close, fields, ppid, starttime = head
    flags = _u64(fields[6]) or 0
    exec_id = marks_digest(_marks(data, close, fields))
    return StatLine(ppid, starttime, _comm(data, close), exec_id, flags)


class MovedLine(msgspec.Struct, frozen=True, gc=False):
    """What the scan takes from the changed stat line of a process it knows: the exec marks
    (``exec_marks``, to compare with its last line's), ppid (``parse_stat``'s; ``None``
    exactly when that is ``None``) and the virtual size (field 23; 0 when the line does not
    parse, or the field is absent or odd)."""

    marks: tuple[bytes, ...]
    ppid: int | None
    vsize: int


def parse_moved_line(data: bytes) -> MovedLine:
    """``exec_marks``, ``parse_stat`` and field 23 of one line from one split: a process that
    ran since the last round has its line looked at so, every round it runs."""
    head = _split(data, _MARKS_SPLIT)
    if head is None:
        return MovedLine(exec_marks(data), None, 0)  # a malformed line: forgotten, counted
    close, fields, ppid, _ = head
    return MovedLine(_marks(data, close, fields), ppid, stat_number(fields, 23))
