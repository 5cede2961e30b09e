"""A scan shard's round in bounded parts, and telling when all the parts of a shard came.

Each ``ShardScan`` frame stays near ``scan.message_bytes`` however much argv a workspace
piles up, so none comes near ``transport.max_message_bytes`` (a frame over it makes ZeroMQ
cut the sender off, and the whole shard would go missing every round).
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from stages.base.schema import RawProcess, ShardScan

PROC_OVERHEAD = 64  # bytes a RawProcess takes on the wire besides its strings, at most


def wire_size(proc: RawProcess) -> int:
    """About what ``proc`` takes encoded (characters counted as bytes: the budget is far
    below transport.max_message_bytes, so non-ASCII text cannot push a part past it)."""
    size = PROC_OVERHEAD + len(proc.comm) + sum(len(a) + 5 for a in proc.cmdline)
    if proc.gitpod_env:
        size += sum(len(k) + len(v) + 10 for k, v in proc.gitpod_env.items())
    return size


def split(scan: ShardScan, budget: int) -> list[ShardScan]:
    """``scan`` in parts of about ``budget`` bytes each (a process larger than that goes in
    a part of its own), so no frame comes near the receiver's size limit however much
    argv a workspace piles up. The last part carries the shard's counts."""
    parts: list[list[RawProcess]] = [[]]
    used = 0
    for proc in scan.procs:
        size = wire_size(proc)
        if parts[-1] and used + size > budget:
            parts.append([])
            used = 0
        parts[-1].append(proc)
        used += size
    if len(parts) == 1:
        return [scan]
    last = len(parts) - 1
    return [
        msgspec.structs.replace(
            scan,
            procs=procs,
            part=i,
            last=i == last,
            listed=scan.listed if i == last else 0,
            skipped=scan.skipped if i == last else {},
        )
        for i, procs in enumerate(parts)
    ]


def complete_shards(parts: Iterable[ShardScan]) -> set[int]:
    """The shards of one round all of whose parts have come (0..last, each once)."""
    seen: dict[int, set[int]] = {}
    last: dict[int, int] = {}
    for p in parts:
        seen.setdefault(p.shard, set()).add(p.part)
        if p.last:
            last[p.shard] = p.part
    return {k for k, n in last.items() if len(seen[k]) == n + 1 and max(seen[k]) == n}


def argv_size(proc: RawProcess) -> int:
    return sum(len(a) + 1 for a in proc.cmdline)


def fair_cap(sizes: list[int], budget: int) -> int | None:
    """The largest per-process cap with ``sum(min(s, cap)) <= budget`` (max-min fairness:
    a process under the cap keeps all it has, and what it leaves goes to the others);
    ``None`` when everything fits."""
    if sum(sizes) <= budget:
        return None
    left, n = budget, len(sizes)
    for i, size in enumerate(sorted(sizes)):
        share = left // (n - i)
        if size > share:
            return share
        left -= size
    return None  # not reached: the sum is over the budget


def cut_argv(argv: list[str], limit: int) -> list[str]:
    """``argv``'s leading arguments, up to ``limit`` characters (NULs included)."""
    out: list[str] = []
    for arg in argv:
        if limit <= 0:
            break
        out.append(arg[: limit - 1] if len(arg) + 1 > limit else arg)
        limit -= len(arg) + 1
    return out


def within_argv_budget(scan: ShardScan, budget: int, floor: int) -> tuple[ShardScan, int]:
    """``scan`` with its processes' argv cut so their total is at most ``budget`` (but no
    process below ``floor`` characters); returns it and how many processes were cut.

    This is what bounds tree, classify and filter whatever a workspace does: a shard's
    round carries at most ``max(budget, floor * processes)`` characters of argv. The cut is
    fair, not first come: thousands of huge argv share the budget equally, and a process
    with a short argv is never cut.
    """
    sizes = [argv_size(p) for p in scan.procs]
    cap = fair_cap(sizes, budget)
    if cap is None:
        return scan, 0
    cap = max(cap, floor)
    procs, cut = [], 0
    for proc, size in zip(scan.procs, sizes, strict=True):
        if size > cap:
            procs.append(msgspec.structs.replace(proc, cmdline=cut_argv(proc.cmdline, cap)))
            cut += 1
        else:
            procs.append(proc)
    return msgspec.structs.replace(scan, procs=procs), cut
