"""docker-compose.yml: validated by a real compose parser, and the very stage commands it
names started as plain processes on loopback tcp form a working pipeline (issue #3).

The stages talk tcp with CURVE keys: each one started here gets a directory holding exactly
the secrets its service lists, as compose would mount them under /run/secrets.

No Docker engine runs here. Compose's own loader resolves YAML anchors and merge keys before
it validates; PyYAML does that part here, and compose-spec (bindings to the Rust compose_spec
crate) validates the result strictly: unknown keys, wrong types, bad volume syntax.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from compose_spec import PyCompose

from pipeline.keyring import ROLES, generate_keys
from pipeline.transport import PORT_OFFSET
from simulation.fakeproc import FakeProcfs
from simulation.harness import free_base_port, procsmith, wait_until

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
PIPELINE = {"scan-0", "scan-1", "tree", "classify", "filter", "match", "enforce", "events"}
SECRETS_DIR = "/run/secrets"  # where compose mounts a service's secrets


def role_of(service: str) -> str:
    return service.split("-", maxsplit=1)[0]


def services() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    PyCompose.from_json(orjson.dumps(data).decode())  # ValueError naming the key if refused
    result: dict[str, Any] = data["services"]
    return result


def test_compose_file_is_valid_and_complete() -> None:
    svc = services()
    assert set(svc) == PIPELINE | {"taphub", "tap", "keys"}
    for name, s in svc.items():
        for dep in s.get("depends_on", []):
            assert dep in svc, f"{name} depends on unknown {dep}"
    assert [s["command"][:4] for n, s in sorted(svc.items()) if n.startswith("scan")] == [
        ["stage", "scan", "--shard", "0/2"],
        ["stage", "scan", "--shard", "1/2"],
    ]
    assert svc["match"]["deploy"]["replicas"] == 2
    for name in ("scan-0", "scan-1", "match", "enforce"):
        assert svc[name]["pid"] == "host"
        assert "/proc:/host/proc:ro" in svc[name]["volumes"]
    for name in ("taphub", "tap"):
        assert svc[name]["profiles"] == ["debug"]
    # The events stage: the initial network namespace (the connector is only there) and
    # NET_ADMIN; the host's pids and procfs; the host's loopback for what it talks to.
    events = svc["events"]
    assert events["command"][:2] == ["stage", "events"]
    assert events["network_mode"] == "host" and "networks" not in events
    assert {"NET_ADMIN", "SYS_PTRACE"} <= set(events["cap_add"])
    assert events["pid"] == "host" and "/proc:/host/proc:ro" in events["volumes"]
    assert events["environment"]["PROCSMITH_TRANSPORT__HOSTS__CLASSIFY"] == "127.0.0.1"
    assert "127.0.0.1:5602:5602" in svc["classify"]["ports"]  # base_port + classify's offset
    assert "127.0.0.1:9501" in events["command"]  # not the host's 9500
    # every other stage keeps its private network
    assert [n for n, s in svc.items() if "network_mode" in s] == ["events"]
    assert "build" in svc["scan-0"]
    assert {s["image"] for s in svc.values()} == {"procsmith:local"}
    assert svc["keys"]["profiles"] == ["setup"]
    assert svc["keys"]["command"][:2] == ["keys", "generate"]


def test_every_service_gets_all_public_keys_and_only_its_own_secret() -> None:
    data = yaml.safe_load(COMPOSE.read_text())
    declared = data["secrets"]
    publics = {f"{role}.key" for role in ROLES}
    for name, s in data["services"].items():
        if name == "keys":
            assert "secrets" not in s  # it writes them; it is given none
            continue
        given = set(s["secrets"])
        assert given <= declared.keys(), name
        assert given == publics | {f"{role_of(name)}.key_secret"}, name
    for name, secret in declared.items():
        assert secret == {"file": f"./keys/{name}"}
    compose_config = tomllib.loads((ROOT / "config" / "compose.toml").read_text())
    assert compose_config["transport"]["keys_dir"] == SECRETS_DIR
    assert compose_config["transport"].get("insecure", False) is False


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ("services:\n  a:\n    image: x\n    commandd: [stage]\n", "commandd"),
        ("services:\n  a:\n    image: x\n    volumes: [':::']\n", "volume"),
        ("services:\n  a:\n    image: x\n    deploy: {replicas: many}\n", "many"),
    ],
)
def test_the_parser_refuses_bad_files(bad: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        PyCompose.from_json(orjson.dumps(yaml.safe_load(bad)).decode())


def local_command(command: list[str]) -> list[str]:
    """A service's command as it would run here: the config from this checkout, and metrics
    on a port of the OS's choosing (all stages share one host here)."""
    out = [a.replace("/app/config/", f"{ROOT}/config/") for a in command]
    if "--metrics-addr" in out:
        out[out.index("--metrics-addr") + 1] = "127.0.0.1:0"
    return procsmith(*out)


def mount_secrets(keys: Path, service: dict[str, Any], into: Path) -> Path:
    """What compose mounts under /run/secrets for ``service``: the files it lists, only."""
    into.mkdir(mode=0o700)
    for name in service["secrets"]:
        shutil.copy2(keys / name, into / name)
    return into


def test_compose_commands_form_a_working_pipeline(tmp_path: Path) -> None:
    """Over tcp with CURVE: each stage started as compose would, with its secrets only."""
    keys = tmp_path / "keys"
    generate_keys(keys)
    fs = FakeProcfs(tmp_path / "proc", atomic=True)
    fs.add(1, 0, ["/sbin/init"])
    fs.workspace(10, 11, workspace_id="ws-compose")
    env = {
        **os.environ,
        # The compose network's names all become this host's loopback.
        "PROCSMITH_TRANSPORT__BIND_HOST": "127.0.0.1",
        "PROCSMITH_TRANSPORT__HOSTS": "{}",
        "PROCSMITH_TRANSPORT__BASE_PORT": str(free_base_port(len(PORT_OFFSET))),
        "PROCSMITH_PROC_ROOT": str(fs.root),
        "PROCSMITH_SCAN__INTERVAL": "200ms",
        "PROCSMITH_TREE__GRACE": "150ms",
    }
    svc = services()
    findings = tmp_path / "enforce.out"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with findings.open("wb") as out, (tmp_path / "stages.log").open("wb") as log:
            for name in sorted(PIPELINE | {"taphub"}):
                replicas = svc[name].get("deploy", {}).get("replicas", 1)
                secrets = mount_secrets(keys, svc[name], tmp_path / f"secrets-{name}")
                own = {**env, "PROCSMITH_TRANSPORT__KEYS_DIR": str(secrets)}
                for _ in range(replicas):
                    stdout = out if name == "enforce" else log
                    cmd = local_command(svc[name]["command"])
                    procs.append(subprocess.Popen(cmd, env=own, stdout=stdout, stderr=log))
        fs.add(20, 11, ["./xmrig", "--donate-level", "1"])
        line = wait_until("a finding", findings.read_bytes, log=tmp_path / "stages.log")
        finding = orjson.loads(line.splitlines()[0])
        assert finding["process"]["pid"] == 20
        assert finding["process"]["workspace"]["workspace_id"] == "ws-compose"
        assert finding["classifier"] == "commandline"
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(30) for p in procs]
    assert codes == [0] * len(procs)
