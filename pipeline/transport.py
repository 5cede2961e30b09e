"""ZeroMQ endpoints, sockets and the record codec.

Endpoints are named after the stage that consumes them (``tree``, ``filter``…), plus the tap
hub's two (``tap-in`` where stages publish, ``tap-out`` where ``procsmith tap`` listens).
Over ipc they are Unix sockets in a private run directory (mode 0700); over tcp each has a
fixed port offset from ``transport.base_port``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import msgspec
import zmq

from pipeline.config import TransportConfig
from stages.base.schema import Record

# Each endpoint's tcp port is transport.base_port plus its offset here. The offsets are
# part of the deployment contract (docker-compose.yml, firewall rules name these ports): a
# new endpoint takes a new offset, and none is ever renumbered.
PORT_OFFSET = {
    "tree": 1,
    "classify": 2,
    "filter": 3,
    "match": 4,
    "enforce": 5,
    "tap-in": 6,
    "tap-out": 7,
}
ENDPOINTS = tuple(PORT_OFFSET)
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path, less its NUL
_WILDCARDS = frozenset({"0.0.0.0", "*", "::"})  # noqa: S104 - recognised, not bound here


def default_run_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/run/procsmith")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    # ensure_run_dir refuses the /tmp fallback if someone else made it or can get into it.
    fallback = Path(f"/tmp/procsmith-{os.geteuid()}")  # noqa: S108
    return Path(runtime) / "procsmith" if runtime else fallback


class RunDirError(Exception):
    pass


def ensure_run_dir(path: Path) -> Path:
    """Create the run directory with mode 0700, or refuse one others can get into."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) & 0o077:
        raise RunDirError(
            f"run directory {path} must be owned by uid {os.geteuid()} with mode 0700 "
            f"(it is uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o})"
        )
    return path


class Endpoints:
    """Where each endpoint is bound and where it is connected to."""

    def __init__(self, config: TransportConfig, binder: dict[str, str]) -> None:
        # binder: endpoint → the stage that binds it (for tcp host lookup)
        self.config = config
        self.binder = binder
        self.run_dir = Path(config.run_dir) if config.run_dir else default_run_dir()
        if config.kind == "ipc":
            longest = max(len(str(self.run_dir / f"{name}.sock")) for name in ENDPOINTS)
            if longest > _SUN_PATH_MAX:
                raise RunDirError(
                    f"run directory {self.run_dir} is too long for Unix socket paths "
                    f"({longest} > {_SUN_PATH_MAX} bytes); choose a shorter transport.run_dir"
                )

    def _port(self, name: str) -> int:
        return self.config.base_port + PORT_OFFSET[name]

    def bind(self, name: str) -> str:
        if self.config.kind == "ipc":
            return f"ipc://{self.run_dir / name}.sock"
        return f"tcp://{self.config.bind_host}:{self._port(name)}"

    def connect(self, name: str) -> str:
        if self.config.kind == "ipc":
            return self.bind(name)
        wildcard = self.config.bind_host in _WILDCARDS
        default = "127.0.0.1" if wildcard else self.config.bind_host
        host = self.config.hosts.get(self.binder.get(name, name), default)
        return f"tcp://{host}:{self._port(name)}"


def open_socket(
    ctx: zmq.Context[zmq.Socket[bytes]],
    kind: int,
    address: str,
    *,
    bind: bool,
    config: TransportConfig,
    hwm: int | None = None,
) -> zmq.Socket[bytes]:
    """A socket with the options every procsmith socket has set explicitly (``hwm``:
    instead of ``transport.hwm``, for a link of large messages)."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, int(config.linger * 1000))
    sock.setsockopt(zmq.SNDHWM, hwm or config.hwm)
    sock.setsockopt(zmq.RCVHWM, hwm or config.hwm)
    if kind in (zmq.PULL, zmq.SUB, zmq.XSUB, zmq.XPUB):
        sock.setsockopt(zmq.MAXMSGSIZE, config.max_message_bytes)
    if kind in (zmq.PUSH, zmq.PUB) and not bind:
        # Queue only to peers that are really there: with no live peer a send fails at once
        # (and is counted as a drop) instead of filling a queue nobody reads.
        sock.setsockopt(zmq.IMMEDIATE, 1)
    if bind:
        if address.startswith("ipc://"):
            Path(address[len("ipc://") :]).unlink(missing_ok=True)  # a stale socket file
        sock.bind(address)
    else:
        sock.connect(address)
    return sock


class Codec:
    """One msgpack Encoder and Decoder per process, reused for every record."""

    def __init__(self) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder: msgspec.msgpack.Decoder[Record] = msgspec.msgpack.Decoder(Record)

    def encode(self, record: Record) -> bytes:
        return self._encoder.encode(record)

    def decode(self, frame: bytes) -> Record:
        """Raises ``msgspec.DecodeError`` on bad input (``ValidationError`` is one)."""
        return self._decoder.decode(frame)
