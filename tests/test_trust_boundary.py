"""The trust boundary (issue #12), tried as a real unprivileged local user against a real
supervised pipeline on this machine's /proc, over tcp on 127.0.0.1 with CURVE keys.

One pipeline takes every attack of the issue's table at once, from one attacker process run
as a throwaway user (tests/unprivileged.py), each attack both with a CURVE key pair of its
own (the servers' public keys handed to it) and with no CURVE at all: forged Findings into
enforce (kill-process of a victim, kill-workspace naming another process as supervisor),
a forged Round into classify, Workloads and Judged into filter, a ShardScan with round id
2**62 into tree, 20 PULL peers on filter → match, SUB on tap-out, PUB/XPUB into tap-in, and
raw bytes. Meanwhile a simulated workspace whose context URL holds a token runs a stand-in
miner: it is found and killed (penalties are live), its record carries no token, the
victims the test started live on, rounds keep completing, and every forged frame was
refused before decode (counted per endpoint; no stage counted a malformed or unexpected
record). The pipeline's only signature is the miner's unique argv[0], so no process another
test runs on this machine can be penalised by it. A second, short pipeline runs tcp with
``insecure = true`` and says so in its gauge.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from pipeline.keyring import generate_keys, load_keys
from pipeline.transport import PORT_OFFSET
from pipeline.wiring import STAGE_NAMES, TAPHUB
from simulation.fakeproc import FakeProcfs
from simulation.harness import Metrics, Pipeline, free_base_port, tapping, wait_until
from simulation.workspace import SimulatedTree, sleeper, workspace
from stages.base.schema import (
    Finding,
    Judged,
    Kind,
    Level,
    Process,
    RawProcess,
    Round,
    ShardScan,
    Workloads,
    Workspace,
)
from stages.pidcheck import current_starttime
from stages.procfs import is_running
from tests.unprivileged import AttackerPython, throwaway_user

pytestmark = pytest.mark.realproc

TOKEN = "ghp_x"  # noqa: S105 - the fake credential the simulated workspace carries
CONTEXT_URL = f"https://oauth2:{TOKEN}@github.com/o/r"
OTHER_SECRET = "s3cr3t-not-a-workspace-field"  # noqa: S105
FORGED_SIGNATURE = "forged-by-attacker"
SERVERS = {"tree": "tree", "classify": "classify", "filter": "filter", "match": "filter"}
SERVERS |= {"enforce": "enforce", "tap-in": TAPHUB, "tap-out": TAPHUB}


def tcp_env(base: int, **more: str) -> dict[str, str]:
    return {
        "PROCSMITH_TRANSPORT__KIND": "tcp",
        "PROCSMITH_TRANSPORT__BASE_PORT": str(base),
        "PROCSMITH_SCAN__INTERVAL": "500ms",
        "PROCSMITH_TREE__GRACE": "400ms",
        **more,
    }


def total(m: Metrics, name: str, **labels: str) -> float:
    """The sum of ``name`` over every sample whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lbls), v in m.samples.items() if n == name and want <= lbls)


def starttime(pid: int) -> int:
    now = current_starttime(f"/proc/{pid}")
    assert isinstance(now, int)
    return now


def process(pid: int, cmdline: list[str], ws: Workspace | None = None) -> Process:
    exe = os.stat(f"/proc/{pid}/exe")
    return Process(
        pid, 1, starttime(pid), 0, f"/proc/{pid}/exe", cmdline, Kind.USER_WORKLOAD, ws,
        exe_dev=exe.st_dev, exe_ino=exe.st_ino,
    )  # fmt: skip


@pytest.fixture
def victims() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Three sleepers the test started: the forged findings' targets."""
    procs = [subprocess.Popen([shutil.which("sleep") or "sleep", "86400"]) for _ in range(3)]
    yield procs
    for p in procs:
        p.kill()
        p.wait()


def forged_frames(
    victims: list[subprocess.Popen[bytes]], miner: Process, now: float
) -> dict[str, list[bytes]]:
    """endpoint → the msgpack frames the attacker sends there."""
    enc = msgspec.msgpack.Encoder()
    v1, v2, v3 = (p.pid for p in victims)
    ws = Workspace("o", "ws-forged", "i", "", v3)  # a process of the test's as "supervisor"
    kill_it = process(v1, ["./xmrig", "--donate-level", "1"])
    kill_ws = process(v2, ["./xmrig"], ws)
    t = datetime.now(UTC)
    round_id = int(now // 0.5) + 1
    fake = [
        RawProcess(4_000_001, 1, 5, "ring1", ["/proc/self/exe", "ring1"],
                   gitpod_env={"GITPOD_WORKSPACE_ID": "ws-forged"}),
        RawProcess(v3, 4_000_001, starttime(v3), "supervisor", ["supervisor", "init"]),
        RawProcess(v1, v3, starttime(v1), "xmrig", ["./xmrig", "--donate-level", "1"]),
    ]  # fmt: skip
    return {
        "enforce": [
            enc.encode(Finding(kill_it, FORGED_SIGNATURE, Level.VERY, "signature", t)),
            enc.encode(Finding(kill_ws, FORGED_SIGNATURE, Level.AUDIT, "signature", t)),
        ],
        "classify": [enc.encode(Round(round_id, "/proc", fake))],
        "filter": [
            enc.encode(Workloads(round_id, [msgspec.structs.replace(kill_it, workspace=ws)])),
            enc.encode(Judged(miner, "clean")),  # the miner, as if it had been judged
        ],
        "tree": [enc.encode(ShardScan(2**62, 0, 1, "/proc", []))],
        "tap-in": [
            enc.encode(Finding(kill_it, FORGED_SIGNATURE, Level.VERY, "signature", t)),
        ],
    }


ATTACK = r"""
import json, socket, sys, time, zmq
P = json.loads(PARAMS)
ctx = zmq.Context()
def sock(kind, endpoint, curve):
    s = ctx.socket(kind)
    s.linger = 0
    if curve:  # a key pair of its own; the server's public key is no secret
        public, secret = zmq.curve_keypair()
        s.curve_serverkey = P["servers"][endpoint].encode()
        s.curve_publickey, s.curve_secretkey = public, secret
    s.connect("tcp://127.0.0.1:%d" % P["ports"][endpoint])
    return s
pushes, listeners, pubs = [], [], []
for curve in (True, False):
    for endpoint in ("enforce", "classify", "filter", "tree"):
        frames = [bytes.fromhex(f) for f in P["frames"][endpoint]]
        pushes.append((sock(zmq.PUSH, endpoint, curve), frames))
    sub = sock(zmq.SUB, "tap-out", curve)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    listeners.append(("tap-out", sub))
    pubs.append(sock(zmq.PUB if curve else zmq.XPUB, "tap-in", curve))
for n in range(20):  # extra PULL peers on filter -> match, to swallow the pipeline's work
    listeners.append(("match", sock(zmq.PULL, "match", n % 2 == 0)))
line = [b"enforce/0", bytes.fromhex(P["frames"]["tap-in"][0])]
got = {"tap-out": 0, "match": 0}
raw_sent = 0
deadline = time.monotonic() + P["seconds"]
while time.monotonic() < deadline:
    for s, frames in pushes:
        for f in frames:
            try:
                s.send(f, zmq.NOBLOCK)
            except zmq.Again:
                pass
    for s in pubs:
        s.send_multipart(line, zmq.NOBLOCK)
    for name, s in listeners:
        while s.poll(0):
            s.recv_multipart()
            got[name] += 1
    for endpoint in ("enforce", "tree"):  # bytes that are not ZeroMQ at all
        try:
            with socket.create_connection(("127.0.0.1", P["ports"][endpoint]), 1) as raw:
                raw.sendall(bytes.fromhex(P["frames"][endpoint][0]))
                raw_sent += 1
        except OSError:
            pass
    time.sleep(0.05)
print(json.dumps({"got": got, "raw_sent": raw_sent}))
ctx.destroy(linger=0)
"""


def run_attacker(
    attacker: AttackerPython, frames: dict[str, list[bytes]], base: int, keys: Path
) -> dict[str, Any]:
    ring = load_keys(keys, secrets_for=[])
    params = {
        "ports": {ep: base + off for ep, off in PORT_OFFSET.items()},
        "servers": {ep: ring.public_key(role).decode() for ep, role in SERVERS.items()},
        "frames": {ep: [f.hex() for f in fs] for ep, fs in frames.items()},
        "seconds": 6,
    }
    script = ATTACK.replace("PARAMS", repr(json.dumps(params)))
    done = attacker.run(script, timeout=120)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_every_attack_of_the_issue_is_refused(
    victims: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    with throwaway_user() as user:
        attacker = AttackerPython(user)
        try:
            _attack_a_secure_pipeline(attacker, victims, tmp_path)
        finally:
            attacker.close()


def _attack_a_secure_pipeline(
    attacker: AttackerPython, victims: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    generate_keys(keys)
    base = free_base_port(len(PORT_OFFSET))
    # The only rule: this test's own miner's argv[0]. Penalties are live on the real /proc,
    # and no process another test runs on this machine can match it.
    miner_name = f"trust-miner-{secrets.token_hex(4)}"
    rules = tmp_path / "signatures.json"
    rules.write_text(json.dumps({"blocklists": {"very": {"binaries": [miner_name]}}}))
    pipe = Pipeline(
        "/proc",
        tcp_env(
            base,
            PROCSMITH_TRANSPORT__KEYS_DIR=str(keys),
            PROCSMITH_ENFORCE__PENALTIES__VERY="kill-process",
            PROCSMITH_ENFORCE__PENALTIES__AUDIT="kill-workspace",
            PROCSMITH_MATCH__SIGNATURES=json.dumps([str(rules)]),
        ),
    )
    findings = pipe.run_dir / "findings.jsonl"
    pipe.env["PROCSMITH_ENFORCE__OUTPUT"] = f'["{findings}"]'
    users = [sleeper("miner", miner_name)]
    tree = workspace(
        users,
        workspace_id="ws-trust",
        git_url=CONTEXT_URL,
        extra_env={"SOME_API_KEY": OTHER_SECRET},
    )
    with pipe, tapping(pipe, *STAGE_NAMES) as tap:
        pipe.wait_flowing()
        m = pipe.metrics()
        assert all(total(m, "procsmith_transport_insecure", stage=s) == 0 for s in STAGE_NAMES)
        with SimulatedTree(tree) as sim:
            miner = sim.pids["miner"]
            frames = forged_frames(victims, process(miner, [miner_name, "86400"]), m_now())
            result: dict[str, Any] = {}
            attack = threading.Thread(
                target=lambda: result.update(run_attacker(attacker, frames, base, keys))
            )
            attack.start()
            wait_until("the miner killed", lambda: not is_running(miner), log=pipe.log)
            attack.join(180)
            assert result, "the attacker did not finish"
            rounds = pipe.metrics().get("procsmith_rounds_total")
            wait_until(
                "three more rounds",
                lambda: pipe.metrics().get("procsmith_rounds_total") >= rounds + 3,
                log=pipe.log,
            )
            m = pipe.metrics()
            records = list(tap.records)
    # Nothing the attacker listened on gave it a frame; its raw connections were made.
    assert result["got"] == {"tap-out": 0, "match": 0}
    assert result["raw_sent"] > 0
    # The victims live; the only finding, and the only penalty, is the real miner's.
    assert [p.poll() for p in victims] == [None, None, None]
    lines = [orjson.loads(x) for x in findings.read_bytes().splitlines()]
    assert [f["process"]["pid"] for f in lines] == [miner]
    assert total(m, "procsmith_enforce_penalties_total", result="ok") == 1
    assert total(m, "procsmith_stage_records_in_total", stage="enforce") == len(lines)
    # Refused before decode: every endpoint counted refused peers, and no stage saw a frame
    # it had to drop (malformed, unexpected, round_ahead, not_handed_on…), nor had enforce
    # anything to re-verify and refuse.
    for stage, endpoint in (
        ("enforce", "enforce"), ("classify", "classify"), ("filter", "filter"),
        ("filter", "match"), ("tree", "tree"), (TAPHUB, "tap-in"), (TAPHUB, "tap-out"),
    ):  # fmt: skip
        refused = total(
            m, "procsmith_transport_peers_refused_total", stage=stage, endpoint=endpoint
        )
        assert refused > 0, (stage, endpoint)
    at_enforce = {
        dict(labels)["reason"]: v
        for (name, labels), v in m.samples.items()
        if name == "procsmith_transport_peers_refused_total" and ("endpoint", "enforce") in labels
    }
    # A stranger's key reaches ZAP: unknown_key. A peer without CURVE (or not ZeroMQ) fails
    # the greeting: no_curve, or handshake when the peer hangs up first (both sides see the
    # mismatch at once).
    assert at_enforce.get("unknown_key", 0) > 0, at_enforce
    assert at_enforce.get("no_curve", 0) + at_enforce.get("handshake", 0) > 0, at_enforce
    assert total(m, "procsmith_stage_records_refused_total") == 0
    assert total(m, "procsmith_enforce_penalties_refused_total") == 0
    assert total(m, "procsmith_tree_late_shards_total") == 0
    # The tap (a client with the tap key) saw the workspace, but no credential, no other
    # environment value, and none of the attacker's lines.
    text = b"".join(orjson.dumps(r) for r in records).decode()
    assert "ws-trust" in text
    assert TOKEN not in text and "oauth2:" not in text and OTHER_SECRET not in text
    assert FORGED_SIGNATURE not in text
    assert lines[0]["process"]["workspace"]["git_url"] == "https://github.com/o/r"
    # What scan sent of the workspace's environment: its four fields, the URL without userinfo.
    envs = [
        p["gitpod_env"]
        for r in records
        if r["type"] == "shard"
        for p in r["record"]["procs"]
        if p["gitpod_env"] and p["gitpod_env"].get("GITPOD_WORKSPACE_ID") == "ws-trust"
    ]
    assert envs
    for env in envs:
        assert env == {
            "GITPOD_OWNER_ID": "sim-owner", "GITPOD_WORKSPACE_ID": "ws-trust",
            "GITPOD_INSTANCE_ID": "sim-instance",
            "GITPOD_WORKSPACE_CONTEXT_URL": "https://github.com/o/r",
        }  # fmt: skip


def m_now() -> float:
    return datetime.now(UTC).timestamp()


def test_insecure_tcp_says_so_on_every_stage(tmp_path: Path) -> None:
    fs = FakeProcfs(tmp_path / "proc", atomic=True)
    fs.add(1, 0, ["/sbin/init"])
    env = tcp_env(free_base_port(len(PORT_OFFSET)), PROCSMITH_TRANSPORT__INSECURE="true")
    with Pipeline(fs.root, env) as pipe:
        pipe.wait_flowing()
        m = pipe.metrics()
        for stage in (*STAGE_NAMES, TAPHUB):
            assert total(m, "procsmith_transport_insecure", stage=stage) == 1, stage
