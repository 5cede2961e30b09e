"""Private directories opened by descriptor, on the real filesystem."""

from __future__ import annotations

import ctypes
import os
import stat
import threading
import time
from pathlib import Path

import pytest
import zmq

from pipeline.rundir import RunDirError, open_private_dir

NOBODY = 65534
RENAME_EXCHANGE = 2  # linux/fs.h
AT_FDCWD = -100


def private(path: Path, mode: int = 0o700) -> Path:
    path.mkdir(mode=mode)
    path.chmod(mode)
    return path


def test_a_missing_directory_is_made_0700_and_held_open(tmp_path: Path) -> None:
    with open_private_dir(tmp_path / "run") as rd:
        st = os.fstat(rd.fd)
        assert (st.st_ino, st.st_mode & 0o7777) == ((tmp_path / "run").stat().st_ino, 0o700)
        assert rd.path == tmp_path / "run"
    assert rd.fd == -1


def test_an_existing_private_directory_is_accepted(tmp_path: Path) -> None:
    with open_private_dir(private(tmp_path / "run"), create=False) as rd:
        assert os.fstat(rd.fd).st_uid == os.geteuid()


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o701, 0o500])
def test_any_mode_but_0700_is_refused(tmp_path: Path, mode: int) -> None:
    with pytest.raises(RunDirError, match=f"mode 0700 .*mode {mode:o}"):
        open_private_dir(private(tmp_path / "run", mode))


def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    run = private(tmp_path / "run")
    os.chown(run, NOBODY, NOBODY)
    with pytest.raises(RunDirError, match=f"uid {NOBODY}"):
        open_private_dir(run)


@pytest.mark.parametrize("owner", [NOBODY, os.geteuid()])
def test_a_symlink_to_a_private_directory_is_refused(tmp_path: Path, owner: int) -> None:
    target = private(tmp_path / "elsewhere")
    os.chown(target, owner, owner)
    (tmp_path / "run").symlink_to(target)
    with pytest.raises(RunDirError, match="symlink"):
        open_private_dir(tmp_path / "run")
    assert list(target.iterdir()) == []


def test_a_symlink_anywhere_in_the_path_is_refused(tmp_path: Path) -> None:
    private(tmp_path / "real")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(RunDirError, match=f"{tmp_path / 'link'} is a symlink"):
        open_private_dir(tmp_path / "link" / "run")
    assert list((tmp_path / "real").iterdir()) == []


def test_a_file_in_its_place_is_refused(tmp_path: Path) -> None:
    (tmp_path / "run").write_text("")
    with pytest.raises(RunDirError, match="not a directory"):
        open_private_dir(tmp_path / "run")


@pytest.mark.parametrize("path", ["relative/run", "/tmp/../run", "/"])
def test_paths_it_will_not_walk(path: str) -> None:
    with pytest.raises(RunDirError):
        open_private_dir(path, create=False)


def test_a_missing_parent_is_made_private_or_named(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match=f"{tmp_path / 'no'} does not exist"):
        open_private_dir(tmp_path / "no" / "run", create=False)
    with open_private_dir(tmp_path / "no" / "run") as rd:
        assert stat.S_IMODE(os.stat(tmp_path / "no").st_mode) == 0o700
        assert os.path.samestat(os.fstat(rd.fd), os.stat(tmp_path / "no" / "run"))


def test_sockets_land_in_the_opened_directory_whatever_the_path_names_later(
    tmp_path: Path,
) -> None:
    real = tmp_path / "run"
    with open_private_dir(real) as rd:
        real.rename(tmp_path / "moved")
        attacker = private(tmp_path / "attacker")
        real.symlink_to(attacker)
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            pull = ctx.socket(zmq.PULL)
            pull.bind(rd.ipc_endpoint("tree"))
            push = ctx.socket(zmq.PUSH)
            push.connect(rd.ipc_endpoint("tree"))
            push.send(b"round")
            assert pull.poll(5000) and pull.recv() == b"round"
            assert len(rd.ipc_endpoint("tap-out")) < 107
            assert [p.name for p in (tmp_path / "moved").iterdir()] == ["tree.sock"]
            assert list(attacker.iterdir()) == []
        finally:
            ctx.destroy(linger=0)


def _exchange(a: Path, b: Path) -> None:
    """renameat2(RENAME_EXCHANGE): swap two names atomically, so one always exists."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(AT_FDCWD, bytes(a), AT_FDCWD, bytes(b), RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def test_a_directory_flipped_with_a_symlink_never_redirects_sockets(tmp_path: Path) -> None:
    """A thread swaps the run directory with a symlink to another 0700 directory of ours
    (which a check that follows symlinks would accept) while the directory is opened again
    and again; every opening that is accepted is the real directory, and so are its sockets."""
    run, other = tmp_path / "run", tmp_path / "other"
    real_inode = private(run).stat().st_ino
    decoy = private(tmp_path / "decoy")
    other.symlink_to(decoy)
    stop = threading.Event()
    flips = [0]

    def flipper() -> None:
        while not stop.is_set():
            _exchange(run, other)
            flips[0] += 1

    accepted = refused = 0
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    thread = threading.Thread(target=flipper)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not (flips[0] >= 1000 and accepted >= 20 and refused >= 20):
            assert time.monotonic() < deadline, (flips[0], accepted, refused)
            try:
                rd = open_private_dir(run)
            except RunDirError:
                refused += 1
                continue
            with rd:
                assert os.fstat(rd.fd).st_ino == real_inode
                if accepted % 10 == 0:
                    sock = ctx.socket(zmq.PULL)
                    sock.bind(rd.ipc_endpoint(f"s{accepted}"))
                    sock.close(linger=0)
                accepted += 1
    finally:
        stop.set()
        thread.join()
        ctx.destroy(linger=0)
    real = run if run.stat().st_ino == real_inode else other
    assert len(list(real.iterdir())) == (accepted + 9) // 10
    assert list(decoy.iterdir()) == []
