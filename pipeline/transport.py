"""ZeroMQ endpoints, sockets and the record codec.

Endpoints are named after the stage that consumes them (``tree``, ``filter``…), plus the tap
hub's two (``tap-in`` where stages publish, ``tap-out`` where ``procsmith tap`` listens).
Over ipc they are Unix sockets in a private run directory (mode 0700), reached through its
descriptor (pipeline/rundir.py); over tcp each has a fixed port offset from
``transport.base_port`` and authenticates its peers with CURVE (pipeline/security.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import msgspec
import zmq

from pipeline.configschema import TransportConfig
from pipeline.rundir import RunDir, open_private_dir
from pipeline.security import Security
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
_WILDCARDS = frozenset({"0.0.0.0", "*", "::"})  # noqa: S104 - recognised, not bound here


def default_run_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/run/procsmith")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    # open_private_dir refuses the /tmp fallback if someone else made it or can get into it.
    fallback = Path(f"/tmp/procsmith-{os.geteuid()}")  # noqa: S108
    return Path(runtime) / "procsmith" if runtime else fallback


def run_dir_of(config: TransportConfig) -> Path:
    """The run directory the config names (absolute), or the default one."""
    return Path(config.run_dir).absolute() if config.run_dir else default_run_dir()


class Endpoints:
    """Where each endpoint is bound and where it is connected to, and the sockets on them.

    Over ipc the run directory is opened here (``open_private_dir``: no symlink followed,
    this euid's, mode 0700, created if missing; ``RunDirError`` otherwise) and every address
    goes through its descriptor, so a directory swapped in later is never used. ``close``
    it after the sockets are closed and their Context terminated. Over tcp ``security``
    makes every socket ``open`` returns a CURVE server or client as ``role``.
    """

    def __init__(
        self,
        config: TransportConfig,
        binder: dict[str, str],
        *,
        security: Security | None = None,
        role: str = "",
    ) -> None:
        # binder: endpoint → the stage that binds it (for tcp host lookup)
        self.config = config
        self.binder = binder
        self.security = security if security is not None else Security()
        self.role = role
        self.run_dir = run_dir_of(config)
        self._dir: RunDir | None = None
        if config.kind == "ipc":
            self._dir = open_private_dir(self.run_dir)

    def _port(self, name: str) -> int:
        return self.config.base_port + PORT_OFFSET[name]

    def bind(self, name: str) -> str:
        if self._dir is not None:
            return self._dir.ipc_endpoint(name)
        return f"tcp://{self.config.bind_host}:{self._port(name)}"

    def connect(self, name: str) -> str:
        if self._dir is not None:
            return self.bind(name)
        wildcard = self.config.bind_host in _WILDCARDS
        default = "127.0.0.1" if wildcard else self.config.bind_host
        host = self.config.hosts.get(self.binder.get(name, name), default)
        return f"tcp://{host}:{self._port(name)}"

    @property
    def curve(self) -> bool:
        """Whether sockets opened here authenticate their peers."""
        return self.security.keyring is not None

    def open(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        kind: int,
        name: str,
        *,
        bind: bool,
        hwm: int | None = None,
    ) -> zmq.Socket[bytes]:
        """A socket of ``kind`` bound to (or connected to) endpoint ``name``."""
        address = self.bind(name) if bind else self.connect(name)

        def secure(sock: zmq.Socket[bytes]) -> None:
            self.security.apply(sock, self.role, name, bind=bind)

        return open_socket(
            ctx, kind, address, bind=bind, config=self.config, before=secure, hwm=hwm
        )

    def close(self) -> None:
        if self._dir is not None:
            self._dir.close()


def open_socket(
    ctx: zmq.Context[zmq.Socket[bytes]],
    kind: int,
    address: str,
    *,
    bind: bool,
    config: TransportConfig,
    before: Callable[[zmq.Socket[bytes]], None] | None = None,
    hwm: int | None = None,
) -> zmq.Socket[bytes]:
    """A socket with the options every procsmith socket has set explicitly; ``before`` sets
    more (CURVE) just before it binds or connects; ``hwm``: instead of ``transport.hwm``,
    for a link of large messages."""
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
    if before is not None:
        before(sock)
    try:
        if bind:
            # A stale socket file is unlinked by libzmq itself before it binds (4.3.5).
            sock.bind(address)
        else:
            sock.connect(address)
    except zmq.ZMQError:
        sock.close(linger=0)
        raise
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
