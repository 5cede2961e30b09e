"""CURVE + ZAP on real ZeroMQ tcp sockets on 127.0.0.1: only admitted keys get a frame in."""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq
from hypothesis import given
from hypothesis import strategies as st
from zmq.utils import z85

from pipeline.curve import HandshakeWatch, ZapAuthenticator, secure_client, secure_server
from pipeline.keyring import ROLES, Keyring, generate_keys, load_keys
from tests.unprivileged import AttackerPython, throwaway_user

Ctx = zmq.Context[zmq.Socket[bytes]]
WAIT = 10.0  # seconds a test waits for the handshakes it started to be decided


@pytest.fixture(scope="module")
def keyring(tmp_path_factory: pytest.TempPathFactory) -> Keyring:
    keys = tmp_path_factory.mktemp("curve") / "keys"
    generate_keys(keys)
    return load_keys(keys)


@pytest.fixture
def ctx() -> Iterator[Ctx]:
    context: Ctx = zmq.Context()
    yield context
    context.destroy(linger=0)


def socket_of(ctx: Ctx, kind: int) -> zmq.Socket[bytes]:
    s = ctx.socket(kind)
    s.linger = 0
    return s


def server(
    ctx: Ctx, kind: int, keyring: Keyring, own: str, domain: str
) -> tuple[zmq.Socket[bytes], str]:
    s = socket_of(ctx, kind)
    secure_server(s, keyring, own, domain=domain)
    port = s.bind_to_random_port("tcp://127.0.0.1")
    return s, f"tcp://127.0.0.1:{port}"


def stranger_keys(s: zmq.Socket[bytes], server_public: bytes) -> None:
    """CURVE with a key pair nobody configured (the server's public key is no secret)."""
    public, secret = zmq.curve_keypair()
    s.curve_serverkey = server_public
    s.curve_publickey = public
    s.curve_secretkey = secret


def wait_until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def drain(s: zmq.Socket[bytes], settle_ms: int = 300) -> list[bytes]:
    got = []
    while s.poll(settle_ms):
        got.append(s.recv())
    return got


def raw_bytes(address: str, data: bytes) -> None:
    host, port = address.removeprefix("tcp://").split(":")
    with socket.create_connection((host, int(port)), timeout=WAIT) as raw:
        raw.sendall(data)
        raw.settimeout(WAIT)
        try:
            while raw.recv(4096):  # until the server closes the connection
                pass
        except OSError:
            pass


def test_pull_admits_only_configured_keys_and_counts_the_rest(ctx: Ctx, keyring: Keyring) -> None:
    with ZapAuthenticator(ctx, keyring, {"enforce": ["match"]}) as auth:
        pull, address = server(ctx, zmq.PULL, keyring, "enforce", "enforce")
        watch = HandshakeWatch(pull)
        admitted = socket_of(ctx, zmq.PUSH)
        secure_client(admitted, keyring, "match", "enforce")
        known_elsewhere = socket_of(ctx, zmq.PUSH)  # a real role, not allowed on this endpoint
        secure_client(known_elsewhere, keyring, "tap", "enforce")
        stranger = socket_of(ctx, zmq.PUSH)
        stranger_keys(stranger, keyring.public_key("enforce"))
        plain = socket_of(ctx, zmq.PUSH)  # no CURVE at all
        for s, tag in ((admitted, b"A"), (known_elsewhere, b"T"), (stranger, b"B"), (plain, b"N")):
            s.connect(address)
            s.send(tag)
        raw_bytes(address, b"\x92\xa7Finding\xcd\xff\xff" * 8)  # msgpack-ish, no ZMTP

        refused = Counter[str]()

        def decided() -> bool:
            refused.update(watch.take())
            return refused.total() >= 4

        wait_until(decided, "four refused handshakes")
        assert drain(pull) == [b"A"]
        # Bytes that are not ZMTP 3 are taken for an old-ZMTP (so NULL) peer: no_curve too.
        assert refused == {"unknown_key": 2, "no_curve": 2}
        assert auth.refused() == 2  # the two that reached ZAP: a stranger, a wrong role
        assert auth.refused_by_domain() == {"enforce": 2}
        assert auth.admitted() == 1
        watch.close()


def test_sub_without_an_admitted_key_receives_nothing(ctx: Ctx, keyring: Keyring) -> None:
    with ZapAuthenticator(ctx, keyring, {"tap-out": ["tap"]}) as auth:
        xpub, address = server(ctx, zmq.XPUB, keyring, "taphub", "tap-out")
        watch = HandshakeWatch(xpub)
        subs = {name: socket_of(ctx, zmq.SUB) for name in ("tap", "stranger", "plain", "scan")}
        secure_client(subs["tap"], keyring, "tap", "taphub")
        secure_client(subs["scan"], keyring, "scan", "taphub")  # a stage key is not a tap key
        stranger_keys(subs["stranger"], keyring.public_key("taphub"))
        for s in subs.values():
            s.setsockopt(zmq.SUBSCRIBE, b"")
            s.connect(address)
        # Only the admitted subscription reaches the XPUB.
        assert xpub.poll(int(WAIT * 1000)) and xpub.recv() == b"\x01"
        refused = Counter[str]()
        wait_until(lambda: refused.update(watch.take()) or refused.total() >= 3, "3 refusals")
        for n in range(50):
            xpub.send(b"record %d" % n)
        got = {name: drain(s, 200) for name, s in subs.items()}
        assert got["tap"] == [b"record %d" % n for n in range(50)]
        assert got["stranger"] == got["plain"] == got["scan"] == []
        assert xpub.poll(0) == 0  # no other subscription ever arrived
        assert (auth.refused(), refused["no_curve"]) == (2, 1)
        watch.close()


def test_forged_pub_into_the_tap_hub_reaches_nobody(ctx: Ctx, keyring: Keyring) -> None:
    with ZapAuthenticator(ctx, keyring, {"tap-in": ["scan", "match"]}) as auth:
        xsub, address = server(ctx, zmq.XSUB, keyring, "taphub", "tap-in")
        xsub.send(b"\x01")  # subscribe to everything upstream
        stage = socket_of(ctx, zmq.PUB)
        secure_client(stage, keyring, "match", "taphub")
        forger = socket_of(ctx, zmq.PUB)
        stranger_keys(forger, keyring.public_key("taphub"))
        stage.connect(address)
        forger.connect(address)
        wait_until(lambda: auth.refused() == 1 and auth.admitted() == 1, "both handshakes")
        for _ in range(100):  # PUB drops until the subscription has arrived
            stage.send(b"real")
            forger.send(b"forged")
            if xsub.poll(20):
                break
        assert set(drain(xsub)) == {b"real"}


def test_a_server_in_a_context_without_zap_admits_nobody(ctx: Ctx, keyring: Keyring) -> None:
    pull, address = server(ctx, zmq.PULL, keyring, "enforce", "enforce")
    watch = HandshakeWatch(pull)
    push = socket_of(ctx, zmq.PUSH)
    secure_client(push, keyring, "match", "enforce")
    push.connect(address)
    push.send(b"unchecked")
    wait_until(lambda: watch.take().total() > 0 or watch.refused.total() > 0, "a refusal")
    assert drain(pull) == []


def test_a_server_with_the_wrong_key_gets_nothing(ctx: Ctx, keyring: Keyring) -> None:
    with ZapAuthenticator(ctx, keyring, {"enforce": ["match"]}) as auth:
        impostor, address = server(ctx, zmq.PULL, keyring, "taphub", "enforce")
        watch = HandshakeWatch(impostor)
        push = socket_of(ctx, zmq.PUSH)
        push.immediate = 1  # writable only once a connection is up (as the pipeline's are)
        secure_client(push, keyring, "match", "enforce")  # expects enforce's key
        push.connect(address)
        # The client's HELLO is sealed for enforce's key: the impostor cannot open it.
        wait_until(lambda: watch.take().total() > 0 or watch.refused.total() > 0, "a refusal")
        assert push.poll(300, zmq.POLLOUT) == 0
        with pytest.raises(zmq.Again):
            push.send(b"secret", zmq.NOBLOCK)
        assert drain(impostor) == [] and (auth.admitted(), auth.refused()) == (0, 0)
        watch.close()


def test_one_authenticator_per_context(ctx: Ctx, keyring: Keyring) -> None:
    with ZapAuthenticator(ctx, keyring, {}), pytest.raises(zmq.ZMQError):
        ZapAuthenticator(ctx, keyring, {}).start()


@given(st.lists(st.binary(max_size=40), max_size=9))
def test_any_zap_request_gets_a_well_formed_answer(frames: list[bytes]) -> None:
    auth = ZapAuthenticator(zmq.Context.instance(), _SHARED_KEYS, {"enforce": ["match"]})
    reply = auth.answer(frames)
    assert len(reply) == 6 and reply[0] == b"1.0"
    assert reply[2] == b"400"  # random bytes are never match's key
    assert auth.refused() == 1


def test_the_admitted_key_gets_200() -> None:
    auth = ZapAuthenticator(zmq.Context.instance(), _SHARED_KEYS, {"enforce": ["match"]})
    key = z85.decode(_SHARED_KEYS.public_key("match"))
    request = [b"1.0", b"7", b"enforce", b"127.0.0.1", b"", b"CURVE", key]
    assert auth.answer(request) == [b"1.0", b"7", b"200", b"OK", b"match", b""]
    assert auth.answer([*request[:2], b"tap-out", *request[3:]])[2] == b"400"


def _in_memory_keys() -> Keyring:
    """Public keys only, enough for ZAP decisions: no files for a property test to leave."""
    return Keyring(Path("/nonexistent"), {role: zmq.curve_keypair()[0] for role in ROLES}, {})


_SHARED_KEYS = _in_memory_keys()

# As the unprivileged user: a CURVE peer with its own keys, a plain ZeroMQ peer, and a
# hand-written ZMTP 3.0 NULL greeting + READY + one frame, all carrying a forged record.
ATTACK = r"""
import socket, struct, time, zmq
address, server_key = ADDRESS, SERVER_KEY
forged = b"\x82\xa4type\xa7Finding\xa5level\xa4very"
ctx = zmq.Context()
stranger = ctx.socket(zmq.PUSH)
public, secret = zmq.curve_keypair()
stranger.curve_serverkey, stranger.curve_publickey, stranger.curve_secretkey = (
    server_key, public, secret)
plain = ctx.socket(zmq.PUSH)
for s in (stranger, plain):
    s.connect(address)
    s.send(forged, zmq.NOBLOCK)
host, port = address[len("tcp://"):].split(":")
raw = socket.create_connection((host, int(port)), timeout=10)
greeting = b"\xff" + bytes(8) + b"\x7f" + bytes([3, 0]) + b"NULL".ljust(20, b"\0") + bytes(32)
prop = bytes([11]) + b"Socket-Type" + struct.pack(">I", 4) + b"PUSH"
ready = b"\x05READY" + prop
raw.sendall(greeting + bytes([4, len(ready)]) + ready + bytes([0, len(forged)]) + forged)
time.sleep(1)
print("sent")
ctx.destroy(linger=0)
"""


def test_an_unprivileged_user_gets_no_frame_in(ctx: Ctx, keyring: Keyring) -> None:
    with throwaway_user() as user, ZapAuthenticator(ctx, keyring, {"enforce": ["match"]}) as auth:
        attacker = AttackerPython(user)
        try:
            pull, address = server(ctx, zmq.PULL, keyring, "enforce", "enforce")
            watch = HandshakeWatch(pull)
            script = ATTACK.replace("ADDRESS", repr(address))
            script = script.replace("SERVER_KEY", repr(keyring.public_key("enforce")))
            done = attacker.run(script, timeout=60)
            assert (done.returncode, done.stdout) == (0, "sent\n"), done.stderr
            refused = Counter[str]()

            def decided() -> bool:
                refused.update(watch.take())
                # A peer without CURVE is seen as no_curve or as a failed handshake,
                # whichever side hangs up first (as in test_trust_boundary.py).
                plain = refused["no_curve"] + refused["handshake"]
                return refused["unknown_key"] >= 1 and plain >= 2

            wait_until(decided, "the attacker's three connections refused")
            assert drain(pull) == []
            assert auth.refused() == 1 and auth.admitted() == 0
            real = socket_of(ctx, zmq.PUSH)  # the endpoint itself works for the real peer
            secure_client(real, keyring, "match", "enforce")
            real.connect(address)
            real.send(b"real")
            assert drain(pull, 2000) == [b"real"]
            watch.close()
        finally:
            attacker.close()
