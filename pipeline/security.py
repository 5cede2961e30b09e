"""Who may connect to which endpoint, and how a process's sockets get CURVE (issue #12).

Over tcp every endpoint is a CURVE server (the socket that binds it) and its peers CURVE
clients; the ZAP handler of the binding process admits a client only if its public key is
one of the roles ``POLICY`` allows on that endpoint (the ZAP domain is the endpoint's name):

    tree ← scan            classify ← tree        filter ← classify, match, enforce
    match ← match (the endpoint filter binds)     enforce ← match
    tap-in ← every stage   tap-out ← tap (``procsmith tap``)

The policy is derived from ``WIRING``, so a new route is admitted where it is wired and
nowhere else. ipc endpoints live in a private run directory (mode 0700) and need no keys.
A tcp config without ``transport.keys_dir`` is refused at start (``ConfigError``, exit 2)
unless it says ``transport.insecure = true``; then each start logs a warning and each process
sets the ``procsmith_transport_insecure`` gauge to 1.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace

import zmq

from pipeline.config import ConfigError
from pipeline.configschema import TransportConfig
from pipeline.curve import ZapAuthenticator, secure_client, secure_server
from pipeline.keyring import ROLES, Keyring, KeyringError, load_keys
from pipeline.wiring import STAGE_NAMES, WIRING, binders

log = logging.getLogger("procsmith.security")

TAP_CLIENT = "tap"  # the role of `procsmith tap`


def _policy() -> dict[str, tuple[str, ...]]:
    bound_by = binders()
    policy: dict[str, tuple[str, ...]] = {}
    for endpoint, binder in bound_by.items():
        if endpoint not in WIRING:
            continue
        clients = {w.name for w in WIRING.values() if endpoint in w.routes.values()}
        if WIRING[endpoint].scaled:  # its replicas connect to the endpoint to pull from it
            clients.add(endpoint)
        policy[endpoint] = tuple(sorted(clients - {binder}))
    policy["tap-in"] = STAGE_NAMES
    policy["tap-out"] = (TAP_CLIENT,)
    return policy


# endpoint → the roles whose keys its binder admits
POLICY: Mapping[str, tuple[str, ...]] = _policy()


@dataclass(frozen=True)
class Security:
    """How this process's tcp sockets authenticate: ``keyring`` is None for no CURVE (ipc,
    or tcp with ``insecure``, which ``insecure`` says)."""

    keyring: Keyring | None = None
    insecure: bool = False

    def for_role(self, role: str) -> Security:
        """The same, holding only ``role``'s secret key (what a forked stage process keeps)."""
        if self.keyring is None:
            return self
        ring = self.keyring
        return replace(self, keyring=replace(ring, secret={role: ring.secret_key(role)}))

    def apply(self, sock: zmq.Socket[bytes], role: str, endpoint: str, *, bind: bool) -> None:
        """Make ``sock`` (not yet bound or connected) a CURVE server or client of ``endpoint``."""
        if self.keyring is None:
            return
        if bind:
            secure_server(sock, self.keyring, role, domain=endpoint)
        else:
            secure_client(sock, self.keyring, role, binders()[endpoint])

    def authenticator(self, ctx: zmq.Context[zmq.Socket[bytes]]) -> ZapAuthenticator | None:
        """The ZAP handler for ``ctx``, started (stop it before ``ctx.term()``); None without
        CURVE. Start it before any socket of ``ctx`` binds."""
        if self.keyring is None:
            return None
        return ZapAuthenticator(ctx, self.keyring, POLICY).start()


def load_security(config: TransportConfig, roles: Collection[str]) -> Security:
    """The keys ``roles`` need under ``config``; raises ``ConfigError`` naming what is wrong."""
    if config.kind != "tcp":
        return Security()
    if not config.keys_dir:
        if not config.insecure:
            raise ConfigError(
                "transport.keys_dir: tcp transport needs CURVE keys: run "
                "`procsmith keys generate DIR` and set transport.keys_dir = DIR (or set "
                "transport.insecure = true to run tcp unauthenticated)"
            )
        log.warning(
            "transport.insecure = true: tcp endpoints on %s accept any peer that can reach "
            "them; anyone there can read every record on the tap and inject records",
            config.bind_host,
        )
        return Security(insecure=True)
    try:
        ring = load_keys(config.keys_dir, secrets_for=[r for r in roles if r in ROLES])
    except KeyringError as err:
        raise ConfigError(f"transport.keys_dir: {err}") from None
    return Security(ring)
