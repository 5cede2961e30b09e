"""Run code as a real unprivileged local user, the attacker of the trust-boundary tests.

As root, ``throwaway_user`` creates a system user with no home and no shell
(``procsmith-test-<random>``) and deletes it afterwards. The venv's Python lives under
/root (mode 0700), out of that user's reach, so ``AttackerPython`` runs the system
``/usr/bin/python3`` with a world-readable copy of the venv's pyzmq (its wheel bundles
libzmq and libsodium), which works when the two Pythons share a minor version. Anything
missing is a ``pytest.skip`` that says what.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import zmq

SYSTEM_PYTHON = "/usr/bin/python3"


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int


@contextmanager
def throwaway_user() -> Iterator[User]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create a throwaway unprivileged user")
    tools = [shutil.which(t) for t in ("useradd", "userdel", "setpriv")]
    if None in tools:
        pytest.skip("needs useradd, userdel and setpriv(1)")
    name = f"procsmith-test-{secrets.token_hex(4)}"
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
        timeout=60,
    )
    try:
        entry = pwd.getpwnam(name)
        yield User(name, entry.pw_uid, entry.pw_gid)
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True, timeout=60)


class AttackerPython:
    """``/usr/bin/python3`` with pyzmq importable, run as ``user`` through setpriv."""

    def __init__(self, user: User) -> None:
        self.user = user
        if not os.access(SYSTEM_PYTHON, os.X_OK):
            pytest.skip(f"no {SYSTEM_PYTHON} for the unprivileged user to run")
        version = subprocess.run(
            [SYSTEM_PYTHON, "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.split()
        if version != [str(n) for n in sys.version_info[:2]]:
            pytest.skip(
                f"{SYSTEM_PYTHON} is Python {'.'.join(version)}, the venv's pyzmq is built "
                f"for {sys.version_info[0]}.{sys.version_info[1]}; the unprivileged user "
                "cannot reach the venv under /root"
            )
        self.root = Path(tempfile.mkdtemp(prefix="procsmith-attacker-"))
        self.root.chmod(0o755)
        site = Path(zmq.__file__).parent.parent
        shutil.copytree(site / "zmq", self.root / "zmq")
        if (site / "pyzmq.libs").is_dir():
            shutil.copytree(site / "pyzmq.libs", self.root / "pyzmq.libs")
        probe = self.run("import zmq; print(zmq.has('curve'))", timeout=60)
        if probe.returncode != 0 or probe.stdout.strip() != "True":
            self.close()
            pytest.skip(f"pyzmq copy does not load for the unprivileged user: {probe.stderr}")

    def run(self, code: str, *, timeout: float) -> subprocess.CompletedProcess[str]:
        """Run ``code`` (read from stdin) as the user, with the pyzmq copy importable."""
        u = self.user
        boot = f"import sys; sys.path.insert(0, {str(self.root)!r}); exec(sys.stdin.read())"
        drop = ["setpriv", f"--reuid={u.uid}", f"--regid={u.gid}", "--clear-groups"]
        return subprocess.run(
            [*drop, SYSTEM_PYTHON, "-I", "-c", boot],
            input=code,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            cwd="/",
            env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
        )

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
