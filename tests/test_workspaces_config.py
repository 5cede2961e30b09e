"""The [workspaces] section: what it accepts, what it refuses, and what it builds."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.builders import build_stage, scan_reader, workspace_providers
from pipeline.config import ConfigError, load_config
from pipeline.configschema import Config
from stages.base.meter import Tally
from stages.classify import ClassifyStage
from stages.providers import CgroupSelectors


def config_of(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "procsmith.toml"
    path.write_text(text)
    return load_config(path)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("providers = []", ["each provider once, at least one"]),
        ("providers = ['gitpod', 'gitpod']", ["each provider once"]),
        ("providers = ['kubernetes']", ["$.workspaces.providers", "'kubernetes'"]),
        ("units = ['ci-*.scope']", ["workspaces.units needs the cgroup provider"]),
        ("providers = ['cgroup']\nnamespaces = ['jupyter']", ["needs workspaces.pod_list_url"]),
        ("providers = ['cgroup']\npod_list_url = 'ftp://x/pods'", ["http:// or https://"]),
        ("providers = ['cgroup']\npod_list_timeout = '0s'", ["between 100ms and 60s"]),
        ("providers = ['cgroup']\ncgroup_root = 'sys/fs/cgroup'", ["absolute path"]),
        ("provider = ['cgroup']", ["unknown field `provider`"]),
    ],
)
def test_refused_with_the_key_and_why(tmp_path: Path, text: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        config_of(tmp_path, f"[workspaces]\n{text}\n")
    for word in words:
        assert word in str(err.value)


def test_cgroup_provider_wires_scan_and_classify(tmp_path: Path) -> None:
    config = config_of(
        tmp_path,
        "[workspaces]\nproviders = ['gitpod', 'cgroup']\nnamespaces = ['jupyter']\n"
        "pod_list_url = 'http://127.0.0.1:10255/pods'\n"
        "[workspaces.pod_labels]\n'app.kubernetes.io/component' = 'singleuser-server'\n",
    )
    tally = Tally()
    assert scan_reader(config, tally).read_cgroup is True
    providers = workspace_providers(config, tally)
    assert providers.names == ("gitpod", "cgroup")
    assert providers.selectors == CgroupSelectors(
        namespaces=("jupyter",),
        pod_labels=(("app.kubernetes.io/component", "singleuser-server"),),
    )
    assert providers.pods is not None
    stage = build_stage("classify", config, tally, index=0, count=1, signatures=None)
    assert isinstance(stage, ClassifyStage) and stage.providers is not None


def test_defaults_read_no_cgroup() -> None:
    config = load_config()
    assert config.workspaces.providers == ["gitpod"]
    assert scan_reader(config, Tally()).read_cgroup is False
    assert workspace_providers(config, Tally()).pods is None


def test_environment_sets_providers() -> None:
    config = load_config(None, {"PROCSMITH_WORKSPACES__PROVIDERS": '["gitpod", "cgroup"]'})
    assert config.workspaces.providers == ["gitpod", "cgroup"]
