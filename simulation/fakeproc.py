"""Fake procfs trees: directories of stat, cmdline, environ files and exe links.

Used where real processes cannot be arranged (a cycle, pid 1 with any argv, 50,000 siblings,
garbage bytes). Executables are small regular files under ``<root>/../bin``, so each has its
own device and inode as the real ``exe`` link would.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import xxhash

RING1 = ["/proc/self/exe", "ring1"]
SUPERVISOR = ["supervisor", "init"]
# A stat line as the kernel writes it (the reference's TestParseStat fixture).
CAT_STAT = (
    b"80275 (cat) R 717 80275 717 34817 80275 4194304 85 0 0 0 0 0 0 0 26 6 1 0 4733826 "
    b"5771264 135 18446744073709551615 94070799228928 94070799254577 140722983793472 0 0 0 0 "
    b"0 0 0 0 0 17 14 0 0 0 0 0 94070799272592 94070799274176 94070803738624 140722983801930 "
    b"140722983801950 140722983801950 140722983821291 0"
)


def stat_line(
    pid: int, comm: bytes | str, ppid: int, starttime: int, image: int = 0, *, flags: int = 4194560
) -> bytes:
    """A stat line shaped like the kernel's: 52 fields, ppid 4th, starttime 22nd.

    ``image`` stands for the memory image: it sets start and end of code (fields 26, 27), as
    an exec of another program does on a real system (0: no image, as a kernel thread).
    """
    comm_b = comm.encode() if isinstance(comm, str) else comm
    code = [str(0x400000 + image * 0x1000), str(0x500000 + image * 0x1000)] if image else ["0"] * 2
    after = ["S", str(ppid), str(pid), str(pid), "0", "-1", str(flags)]
    after += ["0"] * 12 + [str(starttime)] + ["1000", "100", "0"] + code + ["0"] * 25
    return b"%d (%s) " % (pid, comm_b) + " ".join(after).encode() + b"\n"


def image_of(exe: str | None) -> int:
    """A stable stand-in for the memory image of a program, for ``stat_line``."""
    return 0 if exe is None else 1 + zlib.crc32(exe.encode()) % 0xFFFF


def env_bytes(env: Mapping[str, str]) -> bytes:
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items())


def argv_bytes(argv: Sequence[str]) -> bytes:
    return b"".join(a.encode() + b"\0" for a in argv)


def reference_hash(pid: int, ppid: int, starttime: int) -> int:
    """Written out here independently of stages.classify, to check it."""

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
            start = starttime if starttime is not None else 1000 + pid
            stat = stat_line(pid, comm, ppid, start, image_of(exe))
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
        """Point ``exe`` elsewhere and nothing more: an exec that the stat line does not show
        (as one of identical layout with address randomisation off)."""
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
