"""Hostile frames sent straight into the pipeline's sockets (issue #6): each is counted and
dropped, the stage keeps running, and detection goes on."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import zmq

from simulation.fakeproc import FakeProcfs
from simulation.harness import Pipeline, procsmith, wait_until
from stages.base.schema import Finding, Kind, Level, Process, Record, ShardScan

GARBAGE = [
    b"",
    b"\xc1",  # a byte msgpack never uses
    b"\xff" * 100,
    os.urandom(300),
    msgspec.msgpack.encode({"type": "round", "round_id": "x"}),
    msgspec.msgpack.encode([1, 2, 3]),
    msgspec.msgpack.encode(ShardScan(1, 0, 1, "/proc", []))[:-3],  # truncated
]
PROC = Process(5, 1, 9, 0, "/proc/5/exe", ["x"], Kind.USER_WORKLOAD)
FINDING = Finding(PROC, "s", Level.VERY, "signature", datetime(2026, 1, 1, tzinfo=UTC))
# A well-formed record of a type the stage does not take.
WRONG_TYPE: dict[str, Record] = {
    "tree": FINDING,
    "classify": FINDING,
    "filter": FINDING,
    "enforce": ShardScan(1, 0, 1, "/proc", []),
}
LIMIT = 64 * 1024


def test_hostile_frames_on_every_stage_socket(tmp_path: Path) -> None:
    fs = FakeProcfs(tmp_path / "proc", atomic=True)
    fs.add(1, 0, ["/sbin/init"])
    fs.workspace(10, 11)
    env = {"PROCSMITH_TRANSPORT__MAX_MESSAGE_BYTES": str(LIMIT)}
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    with Pipeline(fs.root, env) as pipe:
        pipe.wait_flowing()

        def count(name: str, stage: str, **labels: str) -> float:
            return pipe.metrics().get(name, stage=stage, **labels)

        def above(n: float, name: str, stage: str, **labels: str) -> Callable[[], bool]:
            return lambda: count(name, stage, **labels) > n

        for stage, wrong in WRONG_TYPE.items():
            push = ctx.socket(zmq.PUSH)
            push.connect(f"ipc://{pipe.run_dir}/{stage}.sock")
            for frame in GARBAGE:
                push.send(frame)
            push.send_multipart([b"two", b"frames"])  # each part arrives as a frame
            push.send(msgspec.msgpack.encode(wrong))
            malformed = len(GARBAGE) + 2
            wait_until(
                f"{stage} to count the garbage",
                above(
                    malformed - 1,
                    "procsmith_stage_records_refused_total",
                    stage,
                    reason="malformed",
                ),
                log=pipe.log,
            )
            assert count("procsmith_stage_records_refused_total", stage, reason="unexpected") == 1
            # Over the limit: ZeroMQ cuts this connection; the sender reconnects on its own.
            before = count("procsmith_stage_input_disconnects_total", stage)
            push.send(b"\x00" * (LIMIT + 1))
            wait_until(
                f"{stage} to cut the oversized sender",
                above(before, "procsmith_stage_input_disconnects_total", stage),
                log=pipe.log,
            )
            push.send(b"\xc1")  # the same peer, reconnected, is heard again
            wait_until(
                f"{stage} to hear the reconnected peer",
                above(
                    malformed, "procsmith_stage_records_refused_total", stage, reason="malformed"
                ),
                log=pipe.log,
            )
            push.close(linger=0)
        m = pipe.metrics()
        for stage in ("scan", "tree", "classify", "filter", "match", "enforce", "taphub"):
            assert m.get("procsmith_stage_restarts_total", stage=stage) == 0, stage
        # The injected finding of a well-formed type was not accepted anywhere but enforce's
        # own type check: nothing was written for pid 5. Detection still works:
        fs.add(20, 11, ["./xmrig", "-o", "pool.example.invalid:3333"])
        line = wait_until("a finding after the garbage", pipe.out.read_bytes, log=pipe.log)
        assert b'"pid":20' in line and b'"pid":5,' not in line
    ctx.term()


def test_garbage_on_the_tap_is_skipped_by_tap_clients(tmp_path: Path) -> None:
    fs = FakeProcfs(tmp_path / "proc")
    fs.add(1, 0, ["/sbin/init"])
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    with Pipeline(fs.root) as pipe:
        pipe.wait_flowing()
        tap = subprocess.Popen(
            procsmith("tap"), env=pipe.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        pub = ctx.socket(zmq.PUB)
        pub.connect(f"ipc://{pipe.run_dir}/tap-in.sock")
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # until the tap's subscription has reached us
            pub.send_multipart([b"filter/0", b"\xc1garbage"])
            pub.send_multipart([b"filter/0"])  # a frame short
            time.sleep(0.05)
        pub.close(linger=0)
        tap.send_signal(signal.SIGINT)
        out, err = tap.communicate(timeout=30)
        assert tap.returncode == 0
        assert b"frames could not be decoded" in err
        assert b"Traceback" not in err
        assert b'"stage":"classify"' in out  # the real records kept coming
        assert pipe.metrics().get("procsmith_stage_restarts_total", stage="taphub") == 0
    ctx.term()
