"""Parsers for the procfs files the detector reads, and bounded reads of them (the stat
line's own parsers are ``stages.statline``).

Every parser takes the raw bytes of one file and returns ``None`` (or an empty value) for
anything it cannot make sense of: a hostile workspace can put any byte into its argv, its
environment and its comm, and nothing in them may raise.
"""

from __future__ import annotations

import errno
import os

from stages.redact import strip_userinfo

# The environment variables a workspace is identified by, and the Workspace field each fills.
WORKSPACE_ENV = {
    "GITPOD_OWNER_ID": "owner_id",
    "GITPOD_WORKSPACE_ID": "workspace_id",
    "GITPOD_INSTANCE_ID": "instance_id",
    "GITPOD_WORKSPACE_CONTEXT_URL": "git_url",
}
_WORKSPACE_ENV_KEYS = frozenset(k.encode() for k in WORKSPACE_ENV)
# The one that is a URL: a credential in its userinfo never enters a record.
_URL_ENV = "GITPOD_WORKSPACE_CONTEXT_URL"

STAT_MAX_BYTES = 4096  # the kernel's line is under 1 KiB even with every field at its widest
STAT_READ = STAT_MAX_BYTES + 1  # one byte more than a stat line may have: a longer one is cut
PID_MAX = 2**22  # the kernel's PID_MAX_LIMIT; a larger "pid" is not a process
RING1_PREFIX = ("/proc/self/exe", "ring1")
OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK  # a FIFO in a fake tree cannot block us


def parse_cmdline(data: bytes) -> list[str]:
    """argv as the reference splits it: strip every trailing NUL, split on NUL; empty → []."""
    data = data.rstrip(b"\0")
    if not data:
        return []
    # One decode for the whole line: a NUL is never part of an invalid UTF-8 sequence, so this
    # splits exactly as decoding each argument would, at a third of the cost.
    return decode(data).split("\0")


def parse_gitpod_env(data: bytes, *, truncated: bool = False) -> dict[str, str]:
    """The workspace variables of a ``/proc/<pid>/environ`` file.

    D5: the file is split into whole NUL-separated entries; the key is the text before the
    first ``=``, compared exactly, and the last occurrence wins. A value of any length cannot
    smuggle an entry in. When the read was cut at its bound the last entry is incomplete and
    is dropped. Only these variables are kept (no other environment value leaves scan), and
    userinfo (``user:token@``) is stripped from the context URL (``stages.redact``).
    """
    entries = data.split(b"\0")
    if truncated:
        entries.pop()
    found: dict[str, str] = {}
    for entry in entries:
        if not entry.startswith(b"GITPOD_"):
            continue
        key, sep, value = entry.partition(b"=")
        if sep and key in _WORKSPACE_ENV_KEYS:
            found[key.decode()] = decode(value)
    if _URL_ENV in found:
        found[_URL_ENV] = strip_userinfo(found[_URL_ENV])
    return found


def is_ring1(cmdline: list[str]) -> bool:
    return len(cmdline) >= 2 and cmdline[0] == RING1_PREFIX[0] and cmdline[1] == RING1_PREFIX[1]


def decode(raw: bytes) -> str:
    """Text for bytes that may not be UTF-8; invalid bytes stay visible as ``\\xNN``."""
    return raw.decode("utf-8", "backslashreplace")


def read_bounded(path: str, limit: int, first: int = 4096) -> tuple[bytes, bool]:
    """Read at most ``limit`` bytes of ``path``; the flag says the file had more.

    procfs and regular files return everything available up to the size asked, so a short
    read is the end and the common case costs one ``read`` call. Raises ``OSError``.
    """
    fd = os.open(path, OPEN_FLAGS)
    try:
        want = min(first, limit + 1)
        data = os.read(fd, want)
        if len(data) < want:
            return data, False
        chunks = [data]
        total = len(data)
        while total <= limit:
            chunk = os.read(fd, min(1 << 16, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        return data[:limit], True
    return data, False


def list_pids(proc_root: str, shard: int = 0, shards: int = 1) -> list[int]:
    """The numeric entries of the procfs root whose pid mod ``shards`` is ``shard``, ascending."""
    pids = []
    for name in os.listdir(proc_root):
        # str.isdigit accepts non-ASCII digits; a pid is ASCII.
        if name.isascii() and name.isdigit() and len(name) < 8:
            pid = int(name)
            if 0 < pid <= PID_MAX and pid % shards == shard:
                pids.append(pid)
    pids.sort()
    return pids


def read_stat(path: str) -> bytes:
    """A stat line, up to ``STAT_READ`` bytes (a longer one is malformed). Raises ``OSError``."""
    fd = os.open(path, OPEN_FLAGS)
    try:
        return os.read(fd, STAT_READ)
    finally:
        os.close(fd)


_VANISHED = frozenset({errno.ENOENT, errno.ESRCH})
_DENIED = frozenset({errno.EACCES, errno.EPERM})


def skip_reason(err: OSError) -> str:
    """A bounded label for why a process could not be read."""
    if err.errno in _VANISHED:
        return "vanished"
    if err.errno in _DENIED:
        return "denied"
    return "io_error"


def exe_identity(base: str) -> tuple[int, int]:
    try:
        exe = os.stat(base + "exe")
    except OSError:
        return 0, 0  # kernel threads and zombies have no executable
    return exe.st_dev, exe.st_ino


def same_file(fd: int, path: str) -> bool:
    """Whether ``fd`` (-1: none) is still the file at ``path``."""
    if fd < 0:
        return True  # the line was just read by path
    try:
        at_path, opened = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (at_path.st_dev, at_path.st_ino) == (opened.st_dev, opened.st_ino)


def process_state(pid: int, proc_root: str = "/proc") -> str | None:
    """The state letter of a process (``R``, ``S``, ``Z``…), or ``None`` once it is gone."""
    try:
        raw = read_stat(f"{proc_root}/{pid}/stat")
    except OSError:
        return None
    close = raw.rfind(b")")
    return raw[close + 2 : close + 3].decode("ascii", "replace") or None


def is_running(pid: int, proc_root: str = "/proc") -> bool:
    """Alive, as opposed to gone or a zombie waiting to be reaped."""
    return process_state(pid, proc_root) not in (None, "Z", "X")
