"""CURVE key pairs of the pipeline's roles, on disk and in memory.

Layout: one key pair per role (``ROLES``: each stage, the tap hub, and ``tap`` for
``procsmith tap`` clients), in one key directory, in pyzmq's certificate format (what
``zmq.auth.create_certificates`` writes and ``zmq.auth.load_certificate`` reads):

- ``<role>.key``: the public key; mode 0644. Every process needs all of them (a server
  admits clients by them, a client names its server by one).
- ``<role>.key_secret``: public and secret key; mode 0600. A process needs only its own.

``generate_keys`` makes the directory with mode 0700 (refusing an existing one that is not
ours or not 0700), and writes each file under a temporary name, exclusively, mode set on the
descriptor, then renames it into place; it refuses to replace keys unless ``force``.
``load_keys`` opens every file relative to the directory's descriptor and judges what it
opened (``fstat``): a key file must be a regular file owned by this euid that nobody else can
write, a secret file one that nobody else can read; the directory must be this euid's or
root's and not writable by anyone else. Symlinked files are followed (a Kubernetes Secret
volume is made of them) because only the directory's owner can have made them.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import zmq
from zmq.utils import z85

from pipeline.rundir import RunDirError, open_private_dir

ROLES = ("scan", "tree", "classify", "filter", "match", "enforce", "events", "taphub", "tap")
PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"  # noqa: S105 - a file name suffix
MAX_KEY_FILE = 4096  # pyzmq writes about 300 bytes; anything far larger is not a key file
_Z85_KEY_LEN = 40


class KeyringError(Exception):
    """A key file or directory that cannot be used; the message names it and says why."""


@dataclass(frozen=True)
class Keyring:
    """Public keys of every role and secret keys of the roles this process plays (Z85)."""

    directory: Path
    public: Mapping[str, bytes]
    secret: Mapping[str, bytes]

    def public_key(self, role: str) -> bytes:
        if role not in self.public:
            raise KeyringError(f"{self.directory / (role + PUBLIC_SUFFIX)}: no such key")
        return self.public[role]

    def secret_key(self, role: str) -> bytes:
        if role not in self.secret:
            raise KeyringError(f"{self.directory / (role + SECRET_SUFFIX)}: secret key not loaded")
        return self.secret[role]

    def role_of(self, public_binary: bytes) -> str | None:
        """The role whose public key this is (as ZAP hands it over: 32 raw bytes)."""
        for role, key in self.public.items():
            if z85.decode(key) == public_binary:
                return role
        return None


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise KeyringError(f"no role {role!r}; roles are {', '.join(ROLES)}")


def generate_keys(
    directory: Path | str, roles: Iterable[str] = ROLES, *, force: bool = False
) -> list[Path]:
    """Write a fresh key pair for each role; returns the files written."""
    roles = list(roles)
    for role in roles:
        _check_role(role)
    try:
        rundir = open_private_dir(Path(directory).absolute())
    except RunDirError as err:
        raise KeyringError(str(err)) from None
    with rundir:
        names = [role + suffix for role in roles for suffix in (PUBLIC_SUFFIX, SECRET_SUFFIX)]
        present = [n for n in names if _exists(n, rundir.fd)]
        if present and not force:
            raise KeyringError(
                f"{rundir.path} already holds {', '.join(present)}; "
                "use --force to replace them (every stage must then get the new keys)"
            )
        written: list[Path] = []
        now = datetime.now().isoformat(timespec="seconds")
        for role in roles:
            public, secret = zmq.curve_keypair()
            pub, sec = public.decode(), secret.decode()
            banner = f"#   ****  Generated on {now} by procsmith keys generate  ****\n"
            curve = f'metadata\ncurve\n    public-key = "{pub}"\n'
            _write(rundir.fd, role + PUBLIC_SUFFIX, banner + "\n" + curve, 0o644)
            _write(
                rundir.fd,
                role + SECRET_SUFFIX,
                banner + "\n" + curve + f'    secret-key = "{sec}"\n',
                0o600,
            )
            written += [rundir.path / (role + PUBLIC_SUFFIX), rundir.path / (role + SECRET_SUFFIX)]
        return written


def _exists(name: str, dir_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _write(dir_fd: int, name: str, text: str, mode: int) -> None:
    temp = f".{name}.{os.getpid()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temp, flags, 0o600, dir_fd=dir_fd)
    try:
        os.fchmod(fd, mode)  # exactly this, whatever the umask
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def load_keys(directory: Path | str, secrets_for: Collection[str] = ROLES) -> Keyring:
    """Every role's public key and the secret keys of ``secrets_for`` from ``directory``."""
    path = Path(directory).absolute()
    for role in secrets_for:
        _check_role(role)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise KeyringError(f"key directory {path}: {err.strerror}") from None
    try:
        st = os.fstat(fd)
        mode = stat.S_IMODE(st.st_mode)
        if st.st_uid not in (0, os.geteuid()) or mode & 0o022:
            raise KeyringError(
                f"key directory {path} must belong to uid {os.geteuid()} (or root) and be "
                f"writable by nobody else (it is uid {st.st_uid}, mode {mode:o})"
            )
        public: dict[str, bytes] = {}
        secret: dict[str, bytes] = {}
        for role in ROLES:
            public[role], _ = parse_key_file(
                _read(fd, path, role + PUBLIC_SUFFIX, 0o022), path / (role + PUBLIC_SUFFIX)
            )
        for role in secrets_for:
            name = role + SECRET_SUFFIX
            pub, sec = parse_key_file(_read(fd, path, name, 0o077), path / name)
            if sec is None:
                raise KeyringError(f"{path / name}: no secret-key line")
            if pub != public[role] or zmq.curve_public(sec) != pub:
                raise KeyringError(f"{path / name}: does not match {role}{PUBLIC_SUFFIX}")
            secret[role] = sec
    finally:
        os.close(fd)
    return Keyring(path, public, secret)


def _read(dir_fd: int, path: Path, name: str, forbidden: int) -> bytes:
    """A key file's bytes, if what we opened is ours, a file, and ``forbidden`` bits clear."""
    shown = path / name
    try:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError as err:
        raise KeyringError(
            f"{shown}: {err.strerror} (run: procsmith keys generate {path})"
        ) from None
    try:
        st = os.fstat(fd)
        mode = stat.S_IMODE(st.st_mode)
        if not stat.S_ISREG(st.st_mode):
            raise KeyringError(f"{shown}: not a regular file")
        if st.st_uid != os.geteuid() or mode & forbidden:
            who = "read or written" if forbidden & 0o044 else "written"
            fix = 0o666 & ~forbidden
            raise KeyringError(
                f"{shown}: must belong to uid {os.geteuid()} and not be {who} by group or "
                f"others (it is uid {st.st_uid}, mode {mode:o}); fix: chmod {fix:o}"
            )
        data = os.read(fd, MAX_KEY_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_KEY_FILE:
        raise KeyringError(f"{shown}: larger than {MAX_KEY_FILE} bytes, not a key file")
    return data


def parse_key_file(data: bytes, shown: Path | str = "key file") -> tuple[bytes, bytes | None]:
    """(public, secret or None) of a pyzmq certificate; ``KeyringError`` for anything else."""
    found: dict[bytes, bytes] = {}
    for raw in data[: MAX_KEY_FILE + 1].splitlines():
        line = raw.strip()
        if line.startswith(b"#") or b"=" not in line:
            continue
        name, _, value = line.partition(b"=")
        name = name.strip()
        if name in (b"public-key", b"secret-key") and name not in found:
            found[name] = value.strip(b" \t'\"")
    public = found.get(b"public-key")
    if public is None:
        raise KeyringError(f"{shown}: no public-key line")
    secret = found.get(b"secret-key")
    for label, key in (("public", public), ("secret", secret)):
        if key is not None and not _is_z85_key(key):
            raise KeyringError(f"{shown}: the {label} key is not 40 Z85 characters")
    return public, secret


_Z85_ALPHABET = frozenset(z85.Z85CHARS)


def _is_z85_key(key: bytes) -> bool:
    if len(key) != _Z85_KEY_LEN or not all(c in _Z85_ALPHABET for c in key):
        return False
    try:
        z85.decode(key)  # some 5-character groups overflow 32 bits
    except struct.error:
        return False
    return True
