"""deploy/: the Kubernetes manifests against the Kubernetes schemas (offline), and the dashboard.

kubernetes-validate ships the schemas of each Kubernetes release, so nothing is fetched. The
CRD (ServiceMonitor) and kustomize's own files are not in them: they get structural checks
here, as do the invariants the README promises (no privileged container, the capabilities
and why, the probes, what the NetworkPolicy lets in).
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from pipeline.config import load_config
from stages.base.catalog import CATALOG

DEPLOY = Path(__file__).parent.parent / "deploy"
BASE = DEPLOY / "kubernetes"
COMPONENT = BASE / "components" / "apiserver-lookup"
DASHBOARD = DEPLOY / "grafana" / "procsmith.json"
# The oldest release the base is meant for, and the newest the package knows.
K8S_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
CAPABILITIES = {"SYS_PTRACE", "DAC_READ_SEARCH", "KILL"}
METRICS_PORT = 9500
KUSTOMIZE_KINDS = {"Kustomization", "Component"}
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

Doc = dict[str, Any]


def _docs(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _kustomization(directory: Path) -> Doc:
    (doc,) = _docs(directory / "kustomization.yaml")
    return doc


def _base_resources() -> list[Doc]:
    return [doc for name in _kustomization(BASE)["resources"] for doc in _docs(BASE / name)]


def _one(kind: str, docs: list[Doc] | None = None) -> Doc:
    (doc,) = [d for d in (docs if docs is not None else _base_resources()) if d["kind"] == kind]
    return doc


def _manifests() -> list[tuple[str, Doc]]:
    files = [*BASE.glob("*.yaml"), COMPONENT / "rbac.yaml"]
    return [
        (f"{path.relative_to(DEPLOY)}:{doc['kind']}", doc)
        for path in sorted(files)
        for doc in _docs(path)
        if doc["kind"] not in KUSTOMIZE_KINDS and (doc["apiVersion"], doc["kind"]) not in CRDS
    ]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(("name", "doc"), _manifests(), ids=[n for n, _ in _manifests()])
def test_manifest_is_valid_kubernetes(name: str, doc: Doc, version: str) -> None:
    """Strict: an unknown or misspelt field is an error, not a silently ignored key."""
    kubernetes_validate.validate(doc, version, strict=True)


def test_a_wrong_manifest_fails_validation() -> None:
    daemonset = _one("DaemonSet")
    daemonset["spec"]["template"]["spec"]["hostPid"] = True  # the field is hostPID
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, K8S_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("directory", [BASE, COMPONENT], ids=["base", "apiserver-lookup"])
def test_kustomization_lists_every_file(directory: Path) -> None:
    kustomization = _kustomization(directory)
    listed = list(kustomization.get("resources", []))
    listed += [patch["path"] for patch in kustomization.get("patches", [])]
    on_disk = {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(listed) == sorted(on_disk)
    for component in kustomization.get("components", []):
        assert (directory / component / "kustomization.yaml").is_file()


def test_kustomize_files_are_what_kustomize_reads() -> None:
    base, component = _kustomization(BASE), _kustomization(COMPONENT)
    assert (base["apiVersion"], base["kind"]) == (
        "kustomize.config.k8s.io/v1beta1",
        "Kustomization",
    )
    assert (component["apiVersion"], component["kind"]) == (
        "kustomize.config.k8s.io/v1alpha1",
        "Component",
    )
    assert base["namespace"] == _one("Namespace")["metadata"]["name"]
    images = {image["name"] for image in base["images"]}
    containers = _one("DaemonSet")["spec"]["template"]["spec"]["containers"]
    assert {c["image"].split(":")[0] for c in containers} <= images
    # The component's patch must name a resource of the base.
    (patch,) = _docs(COMPONENT / "token.yaml")
    assert (patch["kind"], patch["metadata"]["name"]) in {
        (d["kind"], d["metadata"]["name"]) for d in _base_resources()
    }


def _container() -> Doc:
    container: Doc
    (container,) = _one("DaemonSet")["spec"]["template"]["spec"]["containers"]
    return container


def test_daemonset_runs_what_the_readme_says() -> None:
    pod = _one("DaemonSet")["spec"]["template"]["spec"]
    container = _container()
    assert pod["hostPID"] is True
    assert container["command"] == [
        *("procsmith", "run", "--config", "/etc/procsmith/procsmith.toml"),
        *("--metrics-addr", f"0.0.0.0:{METRICS_PORT}"),
    ]
    assert {"name": "PROCSMITH_PROC_ROOT", "value": "/host/proc"} in container["env"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/host/proc"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/host/proc"]["name"]]["hostPath"]["path"] == "/proc"
    config_volume = volumes[mounts["/etc/procsmith"]["name"]]
    assert config_volume["configMap"]["name"] == _one("ConfigMap")["metadata"]["name"]
    assert pod["serviceAccountName"] == _one("ServiceAccount")["metadata"]["name"]


def test_daemonset_least_privilege() -> None:
    context = _container()["securityContext"]
    assert context["privileged"] is False
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"]["drop"] == ["ALL"]
    assert set(context["capabilities"]["add"]) == CAPABILITIES  # NET_ADMIN only commented
    text = (BASE / "daemonset.yaml").read_text()
    for capability in [*CAPABILITIES, "NET_ADMIN"]:  # each one says why it is there
        assert re.search(rf"#[^\n]+\n(\s*#[^\n]*\n)*\s*(# )?- {capability}\n", text), capability
    # Everything written at run time goes to an emptyDir, not the read-only root.
    pod = _one("DaemonSet")["spec"]["template"]["spec"]
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    writable = {m["mountPath"] for m in _container()["volumeMounts"] if m["name"] in empty_dirs}
    assert {"/run/procsmith", "/tmp"} <= writable


def test_probes_and_resources() -> None:
    container = _container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/healthz"
        assert ports.get(get["port"], get["port"]) == METRICS_PORT
    resources = container["resources"]
    assert resources["requests"] == {"cpu": "50m", "memory": "200Mi"}
    assert resources["limits"] == {"memory": "512Mi"}


def test_configmap_config_loads_with_procsmiths_own_loader(tmp_path: Path) -> None:
    toml = _one("ConfigMap")["data"]["procsmith.toml"]
    path = tmp_path / "procsmith.toml"
    path.write_text(toml)
    config = load_config(path, {"PROCSMITH_PROC_ROOT": "/host/proc"})
    assert config.proc_root == "/host/proc"
    assert tomllib.loads(toml)["proc_root"] == "/host/proc"  # without the environment too
    assert config.supervisor.metrics_addr.endswith(f":{METRICS_PORT}")


def test_service_servicemonitor_and_networkpolicy_reach_the_pods() -> None:
    labels = _one("DaemonSet")["spec"]["template"]["metadata"]["labels"]
    service, monitor, policy = _one("Service"), _one("ServiceMonitor"), _one("NetworkPolicy")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"}
    ]
    # ServiceMonitor (a CRD: not in the Kubernetes schemas), its structure by hand.
    assert (monitor["apiVersion"], monitor["kind"]) in CRDS
    assert monitor["metadata"]["name"]
    assert set(monitor["spec"]) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [_kustomization(BASE)["namespace"]]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert re.fullmatch(r"[0-9]+(ms|s|m)", endpoint["interval"])
    # NetworkPolicy: ingress to the metrics port only.
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": METRICS_PORT, "protocol": "TCP"}]


def test_rbac_is_read_only_pods() -> None:
    docs = _docs(COMPONENT / "rbac.yaml")
    role, binding = _one("ClusterRole", docs), _one("ClusterRoleBinding", docs)
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    (subject,) = binding["subjects"]
    assert subject["name"] == _one("ServiceAccount")["metadata"]["name"]
    assert subject["namespace"] == _kustomization(BASE)["namespace"]
    # The base mounts no token; only the component does.
    assert _one("DaemonSet")["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    (patch,) = _docs(COMPONENT / "token.yaml")
    assert patch["spec"]["template"]["spec"]["automountServiceAccountToken"] is True


# ---- the Grafana dashboard

_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
_PROMQL_WORDS |= {"and", "or", "unless", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label names, functions, ranges left out)."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges ([5m], [$__rate_interval])
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", expr):
        name, call = match.groups()
        if not call and name.lower() not in _PROMQL_WORDS:
            names.add(name)
    return names


def catalog_name(name: str) -> str | None:
    """The catalog entry an exposed series belongs to (histogram and counter suffixes)."""
    if name in CATALOG:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and CATALOG.get(base, None) and CATALOG[base].type == "histogram":
            return base
    if name.endswith("_created") and CATALOG.get(name.removesuffix("_created") + "_total"):
        return name.removesuffix("_created") + "_total"
    return None


def test_metric_names_reads_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le) (rate(procsmith_round_duration_seconds_bucket{a="b"}'
        "[5m]))) / on(instance) group_left node_load1 * 60"
    )
    assert metric_names(expr) == {"procsmith_round_duration_seconds_bucket", "node_load1"}
    assert (
        catalog_name("procsmith_round_duration_seconds_bucket")
        == "procsmith_round_duration_seconds"
    )
    assert catalog_name("procsmith_rounds_bucket") is None  # a counter has no buckets
    assert catalog_name("node_load1") is None


def _dashboard() -> Doc:
    doc: Doc = json.loads(DASHBOARD.read_text())
    return doc


def test_dashboard_structure() -> None:
    dashboard = _dashboard()
    assert dashboard["title"] and dashboard["uid"]
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert panel["type"] in {"timeseries", "stat", "gauge", "table", "row"}, panel["title"]
        assert panel["title"]
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["gridPos"]["x"] >= 0 and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids)
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"] == panel["datasource"]


def test_dashboard_uses_only_catalog_metrics_and_covers_the_issue() -> None:
    exprs = [t["expr"] for p in _dashboard()["panels"] for t in p["targets"]]
    for variable in _dashboard()["templating"]["list"]:
        if variable["type"] == "query":  # label_values(<metric>, <label>)
            found = re.fullmatch(r"label_values\((\w+), *\w+\)", variable["definition"])
            assert found, variable["definition"]
            exprs.append(found[1])
    used = {name for expr in exprs for name in metric_names(expr)}
    unknown = sorted(name for name in used if catalog_name(name) is None)
    assert unknown == [], f"not in stages/base/catalog.py: {unknown}"
    covered = {catalog_name(name) for name in used}
    for required in (
        "procsmith_rounds_total",
        "procsmith_round_duration_seconds",
        "procsmith_match_findings_total",
        "procsmith_stage_records_dropped_total",
        "procsmith_stage_restarts_total",
        "procsmith_filter_inflight",
        "gitpod_agent_smith_procfs_detector_workspace_count",
        "gitpod_agent_smith_procfs_detector_index_size",
    ):
        assert required in covered, required


# ---- the workspace providers: the ConfigMap and the API-server lookup component


def _patched_daemonset() -> Doc:
    """The base DaemonSet with the component's patch merged the way kustomize's strategic
    merge does for these fields: scalars replaced, containers and env merged by name."""
    daemonset = _one("DaemonSet")
    (patch,) = _docs(COMPONENT / "token.yaml")
    pod, patch_pod = daemonset["spec"]["template"]["spec"], patch["spec"]["template"]["spec"]
    for key, value in patch_pod.items():
        if key != "containers":
            pod[key] = value
    containers = {c["name"]: c for c in pod["containers"]}
    for patch_container in patch_pod["containers"]:
        env = {e["name"]: e for e in containers[patch_container["name"]]["env"]}
        env.update({e["name"]: e for e in patch_container["env"]})
        containers[patch_container["name"]]["env"] = list(env.values())
    return daemonset


def test_configmap_turns_the_cgroup_provider_on(tmp_path: Path) -> None:
    path = tmp_path / "procsmith.toml"
    path.write_text(_one("ConfigMap")["data"]["procsmith.toml"])
    workspaces = load_config(path).workspaces
    assert workspaces.providers == ["gitpod", "cgroup"]
    mounts = {m["mountPath"]: m for m in _container()["volumeMounts"]}
    assert workspaces.cgroup_root in mounts  # the host's cgroup tree, mounted there
    pod = _one("DaemonSet")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts[workspaces.cgroup_root]["name"]]["hostPath"]["path"] == "/sys/fs/cgroup"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_apiserver_lookup_component_gives_a_valid_daemonset_and_config(
    tmp_path: Path, version: str
) -> None:
    daemonset = _patched_daemonset()
    kubernetes_validate.validate(daemonset, version, strict=True)
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    names = [e["name"] for e in container["env"]]
    assert names.index("NODE_NAME") < names.index("PROCSMITH_WORKSPACES__POD_LIST_URL")
    # What the kubelet hands procsmith: $(NODE_NAME) expanded, the rest as written.
    values = {name: e["value"] for name, e in env.items() if "value" in e}
    environ = {name: value.replace("$(NODE_NAME)", "node-1") for name, value in values.items()}
    path = tmp_path / "procsmith.toml"
    path.write_text(_one("ConfigMap")["data"]["procsmith.toml"])
    workspaces = load_config(path, environ).workspaces
    assert workspaces.pod_list_url == (
        "https://kubernetes.default.svc/api/v1/pods?fieldSelector=spec.nodeName=node-1"
    )
    assert workspaces.pod_list_token_file.startswith("/var/run/secrets/kubernetes.io/")
    assert workspaces.pod_list_ca_file.endswith("/ca.crt")
