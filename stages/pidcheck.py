"""Is a pid still the process a record names? Read from procfs ``stat``, bounded.

A pid is reused once its process is gone; (pid, starttime) is what names one process.
Matching checks it before reporting a finding, enforcing before sending a signal.
"""

from __future__ import annotations

import os

from stages.procfs import read_stat, skip_reason
from stages.statline import parse_stat


def current_starttime(proc_dir: str) -> int | str:
    """The starttime of the process in ``proc_dir`` now, or why it cannot be read
    (``vanished``, ``denied``, ``io_error``, ``malformed_stat``)."""
    try:
        raw = read_stat(os.path.join(proc_dir, "stat"))
    except OSError as err:
        return skip_reason(err)
    stat = parse_stat(raw)
    return "malformed_stat" if stat is None else stat.starttime


def still_same(proc_dir: str, starttime: int) -> str | None:
    """``None`` when the process in ``proc_dir`` still has ``starttime``; else ``reused``,
    ``vanished`` or why the check could not be made."""
    now = current_starttime(proc_dir)
    if isinstance(now, str):
        return now
    return None if now == starttime else "reused"
