"""Key pairs on disk: ``procsmith keys generate`` and ``load_keys``, on the real filesystem."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import zmq
import zmq.auth
from hypothesis import given
from hypothesis import strategies as st

from pipeline.keyring import (
    ROLES,
    KeyringError,
    generate_keys,
    load_keys,
    parse_key_file,
)
from simulation.harness import run_procsmith as procsmith

NOBODY = 65534


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    generate_keys(tmp_path / "keys")
    return tmp_path / "keys"


def test_cli_generates_every_role_with_private_modes(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    done = procsmith("keys", "generate", str(keys))
    assert (done.returncode, done.stderr) == (0, "")
    assert mode(keys) == 0o700
    names = {f"{r}{suffix}" for r in ROLES for suffix in (".key", ".key_secret")}
    assert {p.name for p in keys.iterdir()} == names
    assert done.stdout.split() == [
        str(keys / n) for r in ROLES for n in (f"{r}.key", f"{r}.key_secret")
    ]
    for role in ROLES:
        assert (mode(keys / f"{role}.key"), mode(keys / f"{role}.key_secret")) == (0o644, 0o600)


def test_cli_refuses_to_replace_keys_without_force(keys: Path) -> None:
    before = (keys / "enforce.key_secret").read_bytes()
    done = procsmith("keys", "generate", str(keys))
    assert done.returncode == 2
    assert "already holds" in done.stderr and "--force" in done.stderr
    assert (keys / "enforce.key_secret").read_bytes() == before
    forced = procsmith("keys", "generate", "--force", str(keys))
    assert forced.returncode == 0, forced.stderr
    assert (keys / "enforce.key_secret").read_bytes() != before
    assert sorted(p.name for p in keys.iterdir() if p.name.startswith(".")) == []


def test_cli_refuses_a_directory_others_can_enter(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o755)
    keys.chmod(0o755)
    done = procsmith("keys", "generate", str(keys))
    assert done.returncode == 2 and "mode 0700" in done.stderr
    assert list(keys.iterdir()) == []


def test_generated_keys_load_and_pair_up(keys: Path) -> None:
    ring = load_keys(keys)
    assert set(ring.public) == set(ring.secret) == set(ROLES)
    assert len(set(ring.public.values())) == len(ROLES)
    for role in ROLES:
        assert zmq.curve_public(ring.secret_key(role)) == ring.public_key(role)
        # the format is pyzmq's own
        assert zmq.auth.load_certificate(keys / f"{role}.key") == (ring.public[role], None)
        assert zmq.auth.load_certificate(keys / f"{role}.key_secret") == (
            ring.public[role],
            ring.secret[role],
        )
    assert ring.role_of(zmq.utils.z85.decode(ring.public["tap"])) == "tap"


def test_a_process_loads_only_its_own_secret(keys: Path) -> None:
    for role in ROLES:
        if role != "enforce":
            (keys / f"{role}.key_secret").unlink()
    ring = load_keys(keys, secrets_for=["enforce"])
    assert set(ring.secret) == {"enforce"}
    with pytest.raises(KeyringError, match=r"match\.key_secret: secret key not loaded"):
        ring.secret_key("match")


def test_a_missing_file_is_named(keys: Path) -> None:
    (keys / "tap.key").unlink()
    with pytest.raises(KeyringError, match=r"tap\.key: No such file"):
        load_keys(keys)


@pytest.mark.parametrize("bad_mode", [0o640, 0o604, 0o644])
def test_a_secret_others_can_read_is_refused(keys: Path, bad_mode: int) -> None:
    (keys / "filter.key_secret").chmod(bad_mode)
    with pytest.raises(
        KeyringError, match=rf"filter\.key_secret: .* mode {bad_mode:o}\); fix: chmod 600"
    ):
        load_keys(keys)


def test_a_public_key_others_can_write_is_refused(keys: Path) -> None:
    (keys / "match.key").chmod(0o664)
    with pytest.raises(KeyringError, match=r"match\.key: .*not be written"):
        load_keys(keys)


def test_a_key_file_of_another_user_is_refused(keys: Path) -> None:
    os.chown(keys / "scan.key", NOBODY, NOBODY)
    with pytest.raises(KeyringError, match=rf"scan\.key: must belong .* uid {NOBODY}"):
        load_keys(keys)


def test_a_directory_others_can_write_is_refused(keys: Path) -> None:
    keys.chmod(0o777)
    with pytest.raises(KeyringError, match="writable by nobody else"):
        load_keys(keys)


def test_a_secret_that_does_not_match_its_public_key_is_refused(keys: Path) -> None:
    os.replace(keys / "tap.key_secret", keys / "enforce.key_secret")
    with pytest.raises(KeyringError, match=r"enforce\.key_secret: does not match enforce\.key"):
        load_keys(keys)


def test_a_symlinked_key_file_is_judged_by_its_target(keys: Path) -> None:
    """As a Kubernetes Secret volume lays them out: the file is a link to the real one."""
    data = keys / "..data"
    data.mkdir(mode=0o700)
    os.replace(keys / "tree.key_secret", data / "tree.key_secret")
    (keys / "tree.key_secret").symlink_to(Path("..data") / "tree.key_secret")
    assert "tree" in load_keys(keys).secret
    (data / "tree.key_secret").chmod(0o644)
    with pytest.raises(KeyringError, match=r"tree\.key_secret: .*mode 644"):
        load_keys(keys)


def test_a_huge_or_special_file_is_refused(keys: Path) -> None:
    (keys / "tap.key").write_bytes(b"#" * 10_000)
    with pytest.raises(KeyringError, match=r"tap\.key: larger than"):
        load_keys(keys)
    (keys / "tap.key").unlink()
    os.mkfifo(keys / "tap.key", 0o600)
    with pytest.raises(KeyringError, match=r"tap\.key: not a regular file"):
        load_keys(keys)


_NEAR_MISS = st.text(alphabet=" \t\"'=#-akeyublicsrt0Z.\n", max_size=200).map(str.encode)
_KEY_LINES = st.builds(
    lambda name, key, quote: name + b" = " + quote + key + quote,
    st.sampled_from([b"public-key", b"secret-key", b"    public-key"]),
    st.binary(min_size=38, max_size=42),
    st.sampled_from([b'"', b"'", b""]),
)


@given(st.one_of(st.binary(max_size=600), _NEAR_MISS, st.lists(_KEY_LINES).map(b"\n".join)))
def test_parse_key_file_on_any_bytes_returns_keys_or_says_why(data: bytes) -> None:
    try:
        public, secret = parse_key_file(data)
    except KeyringError as err:
        assert str(err).startswith("key file: ")
        return
    for key in (public, secret):
        assert key is None or len(zmq.utils.z85.decode(key)) == 32
