"""Fake procfs trees: directories of stat, cmdline, environ files and exe links.

Used where real processes cannot be arranged (a cycle, pid 1 with any argv, 50,000 siblings,
garbage bytes). Executables are small regular files under ``<root>/../bin``, so each has its
own device and inode as the real ``exe`` link would.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import xxhash

RING1 = ["/proc/self/exe", "ring1"]
SUPERVISOR = ["supervisor", "init"]


def stat_line(pid: int, comm: bytes | str, ppid: int, starttime: int) -> bytes:
    """A stat line shaped like the kernel's: 52 fields, ppid 4th, starttime 22nd."""
    comm_b = comm.encode() if isinstance(comm, str) else comm
    after = ["S", str(ppid), str(pid), str(pid), "0", "-1", "4194560"]
    after += ["0"] * 12 + [str(starttime)] + ["1000", "100"] + ["0"] * 28
    return b"%d (%s) " % (pid, comm_b) + " ".join(after).encode() + b"\n"


def env_bytes(env: Mapping[str, str]) -> bytes:
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items())


def argv_bytes(argv: Sequence[str]) -> bytes:
    return b"".join(a.encode() + b"\0" for a in argv)


def reference_hash(pid: int, ppid: int, starttime: int) -> int:
    """Written out here independently of stages.classify, to check it."""
    import struct  # noqa: PLC0415

    return xxhash.xxh64(struct.pack("<QQQ", pid, ppid, starttime)).intdigest()


class FakeProcfs:
    """Builds a procfs tree under ``root``; ``add`` writes one process."""

    def __init__(self, root: Path, *, atomic: bool = False) -> None:
        # atomic: a new process appears all at once (written aside, then renamed into place),
        # so a pipeline scanning this tree meanwhile never sees it half-written.
        self.atomic = atomic
        self.root = root
        self.bin = root.parent / "bin"
        root.mkdir(parents=True, exist_ok=True)
        self.bin.mkdir(exist_ok=True)

    def binary(self, name: str) -> Path:
        path = self.bin / name
        if not path.exists():
            path.write_bytes(b"\x7fELF fake " + name.encode())
        return path

    def add(
        self,
        pid: int,
        ppid: int,
        cmdline: Sequence[str] | bytes = ("proc",),
        *,
        starttime: int | None = None,
        comm: bytes | str | None = None,
        env: Mapping[str, str] | bytes | None = None,
        exe: str | None = "default",
        stat: bytes | None = None,
    ) -> Path:
        """One process. ``stat``/bytes arguments are written verbatim (for malformed input);
        ``exe=None`` leaves no exe link, as for a kernel thread."""
        final = self.root / str(pid)
        d = self.root / f".new-{pid}" if self.atomic and not final.exists() else final
        d.mkdir(exist_ok=True)
        if stat is None:
            if comm is None:
                comm = (
                    os.path.basename(cmdline[0])
                    if cmdline and not isinstance(cmdline, bytes)
                    else "proc"
                )
            stat = stat_line(pid, comm, ppid, starttime if starttime is not None else 1000 + pid)
        (d / "stat").write_bytes(stat)
        raw_cmd = cmdline if isinstance(cmdline, bytes) else argv_bytes(cmdline)
        (d / "cmdline").write_bytes(raw_cmd)
        raw_env = env if isinstance(env, bytes) else env_bytes(env or {})
        (d / "environ").write_bytes(raw_env)
        self._link_exe(d / "exe", exe)
        if d != final:
            d.rename(final)
        return final

    def set_exe(self, pid: int, exe: str | None) -> None:
        self._link_exe(self.root / str(pid) / "exe", exe)

    def _link_exe(self, link: Path, exe: str | None) -> None:
        if link.is_symlink() or link.exists():
            link.unlink()
        if exe is not None:
            link.symlink_to(self.binary(exe))

    def remove(self, pid: int) -> None:
        d = self.root / str(pid)
        for child in d.iterdir():
            child.unlink()
        d.rmdir()

    def workspace(
        self,
        ring1_pid: int,
        supervisor_pid: int,
        parent: int = 1,
        **ids: str,
    ) -> None:
        """ring1 (with GITPOD_ ids) → supervisor init, under ``parent``."""
        env = {
            "GITPOD_OWNER_ID": ids.get("owner_id", "owner"),
            "GITPOD_WORKSPACE_ID": ids.get("workspace_id", "ws"),
            "GITPOD_INSTANCE_ID": ids.get("instance_id", "instance"),
            "GITPOD_WORKSPACE_CONTEXT_URL": ids.get("git_url", "https://example.com/repo"),
        }
        self.add(ring1_pid, parent, RING1, env=env, exe="workspacekit")
        self.add(supervisor_pid, ring1_pid, SUPERVISOR, exe="supervisor")
