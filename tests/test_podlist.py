"""The pod list lookup (stages/podlist.py) against a real HTTP server on 127.0.0.1.

The server is the stdlib's, in a thread, answering as the kubelet's ``/pods`` does (a PodList);
each test sets what it answers. A kubelet that is down is a port nobody listens on.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stages import podlist
from stages.base.catalog import POD_LIST_FETCHES
from stages.base.meter import Tally
from stages.podlist import FetchFailed, PodDirectory, PodMeta, parse_pod_list

UID = "55c6c714-b240-4dec-9a45-57b61696ab6e"
STATIC_HASH = "8daa50c3a64c9ff60bb9eab7b44b56fd"


def pod(uid: str, name: str, namespace: str = "jupyter", **extra: Any) -> dict[str, Any]:
    return {"metadata": {"uid": uid, "name": name, "namespace": namespace, **extra}}


class Kubelet:
    """What the server answers: ``status``, ``body``, a ``delay`` before it; what it was asked."""

    def __init__(self) -> None:
        self.status = 200
        self.body = json.dumps({"kind": "PodList", "items": [pod(UID, "jupyter-alice")]}).encode()
        self.delay = 0.0
        self.requests: list[dict[str, str]] = []


@pytest.fixture
def kubelet() -> Iterator[tuple[Kubelet, str]]:
    state = Kubelet()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append({"path": self.path, **dict(self.headers.items())})
            time.sleep(state.delay)
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(state.body)))
            self.end_headers()
            self.wfile.write(state.body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/pods"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_pods_by_uid_with_token_and_refresh(
    kubelet: tuple[Kubelet, str], tmp_path: Path, tally: Tally
) -> None:
    state, url = kubelet
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    clock = Clock()
    directory = PodDirectory(url, tally, refresh=30, token_file=str(token), clock=clock)
    pods = directory.pods()
    assert pods[UID] == PodMeta("jupyter", "jupyter-alice", {})
    assert state.requests[0]["Authorization"] == "Bearer s3cret"
    assert state.requests[0]["path"] == "/pods"
    clock.now += 10
    directory.pods()  # not due yet: no request
    assert len(state.requests) == 1
    clock.now += 20
    directory.pods()
    assert len(state.requests) == 2
    assert tally.get(POD_LIST_FETCHES, result="ok") == 2


def test_an_unknown_uid_fetches_early_but_not_on_every_round(
    kubelet: tuple[Kubelet, str], tally: Tally
) -> None:
    state, url = kubelet
    clock = Clock()
    directory = PodDirectory(url, tally, refresh=30, clock=clock)
    directory.pods({UID})
    newer = "0a1b2c3d-0000-4000-8000-000000000001"
    state.body = json.dumps({"items": [pod(UID, "a"), pod(newer, "b")]}).encode()
    clock.now += 1
    assert newer not in directory.pods({newer})  # within MISS_RETRY: the list as it was
    clock.now += podlist.MISS_RETRY
    assert directory.pods({newer})[newer].name == "b"
    assert len(state.requests) == 2


def test_a_kubelet_that_is_down_keeps_the_last_list_and_is_counted(
    kubelet: tuple[Kubelet, str], tally: Tally
) -> None:
    state, url = kubelet
    clock = Clock()
    directory = PodDirectory(url, tally, refresh=1, clock=clock)
    assert UID in directory.pods()
    directory.url = f"http://127.0.0.1:{free_port()}/pods"  # nobody listens there
    clock.now += 1
    assert UID in directory.pods()
    assert tally.get(POD_LIST_FETCHES, result="unreachable") == 1
    directory.url = url
    state.status = 403
    clock.now += 1
    assert UID in directory.pods()
    assert tally.get(POD_LIST_FETCHES, result="http_status") == 1
    state.status, state.body = 200, b"{not json"
    clock.now += 1
    assert UID in directory.pods()
    assert tally.get(POD_LIST_FETCHES, result="malformed") == 1


def test_slow_and_oversized_answers_are_cut_off(
    kubelet: tuple[Kubelet, str], tally: Tally, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, url = kubelet
    state.delay = 1.0
    with pytest.raises(FetchFailed) as failed:
        podlist.fetch(url, timeout=0.2)
    assert failed.value.reason == "timeout"
    state.delay = 0.0
    monkeypatch.setattr(podlist, "POD_LIST_MAX_BYTES", 100)
    state.body = json.dumps({"items": [pod(UID, "x" * 500)]}).encode()
    with pytest.raises(FetchFailed) as failed:
        podlist.fetch(url, timeout=5)
    assert failed.value.reason == "too_large"


def test_missing_token_file_is_counted(
    kubelet: tuple[Kubelet, str], tally: Tally, tmp_path: Path
) -> None:
    _state, url = kubelet
    missing = str(tmp_path / "no-token")
    PodDirectory(url, tally, token_file=missing).pods()
    assert tally.get(POD_LIST_FETCHES, result="token") == 1


def test_static_pods_by_config_hash_and_odd_items_skipped() -> None:
    items = [
        pod("mirror", "etcd-node", "kube-system", annotations={podlist.CONFIG_HASH: STATIC_HASH}),
        {"metadata": {"name": "no-uid"}},
        "not an object",
        pod(UID.upper(), "upper", labels={"a": "b", "n": 5}),
    ]
    pods = parse_pod_list(json.dumps({"items": items}).encode())
    assert pods[STATIC_HASH].name == "etcd-node"
    assert pods[UID] == PodMeta("jupyter", "upper", {"a": "b"})
    assert set(pods) == {"mirror", STATIC_HASH, UID}


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["items", "metadata", "uid", "labels", "x"]), children)
    ),
    max_leaves=30,
)


@given(_JSON)
def test_any_json_gives_pods_or_malformed(doc: object) -> None:
    try:
        pods = parse_pod_list(json.dumps(doc).encode())
    except FetchFailed as failed:
        assert failed.reason == "malformed"
        return
    for meta in pods.values():
        assert isinstance(meta.name, str) and isinstance(meta.namespace, str)
        assert all(isinstance(v, str) for v in meta.labels.values())


@given(st.binary(max_size=200))
def test_any_bytes_never_raise_anything_else(data: bytes) -> None:
    try:
        parse_pod_list(data)
    except FetchFailed as failed:
        assert failed.reason == "malformed"
