"""Pod name, namespace and labels by pod UID, from the kubelet's or the API server's pod list.

Optional: attribution by pod UID never needs it; selectors by namespace and label do. The
list is fetched over plain stdlib HTTP(S) with a deadline on the whole exchange and a bound
on its size, at most once per ``refresh`` seconds (and, for a UID it does not know yet, once
per ``MISS_RETRY`` seconds). What was fetched last stays in use while fetches fail; each
fetch is counted by result.

Both sources answer with a ``PodList`` (``{"items": [{"metadata": {...}}]}``): the kubelet's
``/pods`` (its read-only port, ``http://<node>:10255/pods``, where enabled) and the API
server's ``/api/v1/pods?fieldSelector=spec.nodeName=<node>`` (with a ServiceAccount token).
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import NamedTuple

from stages.base.catalog import POD_LIST_FETCHES
from stages.base.meter import Meter

POD_LIST_MAX_BYTES = 64 << 20  # a node's pod list is some MiB at most (110 pods by default)
TOKEN_MAX_BYTES = 64 * 1024
MISS_RETRY = 5.0  # seconds between fetches made because a UID was not in the list
_LABELS_MAX = 256  # per pod; more are ignored
_TEXT_MAX = 1024  # characters of a name, namespace, label key or value kept
CONFIG_HASH = "kubernetes.io/config.hash"


class PodMeta(NamedTuple):
    namespace: str
    name: str
    labels: Mapping[str, str]


class FetchFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _text(value: object) -> str | None:
    return value[:_TEXT_MAX] if isinstance(value, str) else None


def parse_pod_list(data: bytes) -> dict[str, PodMeta]:
    """UID → metadata of each pod in a PodList; raises ``FetchFailed("malformed")``.

    Items without a string UID are skipped; labels that are not strings are left out.
    """
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise FetchFailed("malformed") from None
    items = doc.get("items") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise FetchFailed("malformed")
    pods: dict[str, PodMeta] = {}
    for item in items:
        meta = item.get("metadata") if isinstance(item, dict) else None
        if not isinstance(meta, dict):
            continue
        uid = _text(meta.get("uid"))
        if not uid:
            continue
        raw_labels = meta.get("labels")
        labels: dict[str, str] = {}
        if isinstance(raw_labels, dict):
            for key, value in list(raw_labels.items())[:_LABELS_MAX]:
                if isinstance(value, str):
                    labels[key[:_TEXT_MAX]] = value[:_TEXT_MAX]
        namespace, name = _text(meta.get("namespace")) or "", _text(meta.get("name")) or ""
        pod = PodMeta(namespace, name, labels)
        pods[uid.lower()] = pod
        # A static pod's cgroup is named by its config hash; its API object (the mirror pod)
        # has a UID of its own and the hash in this annotation.
        annotations = meta.get("annotations")
        if isinstance(annotations, dict):
            config_hash = _text(annotations.get(CONFIG_HASH))
            if config_hash:
                pods.setdefault(config_hash.lower(), pod)
    return pods


def _read_file(path: str, limit: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(limit)


def _connection(
    parts: urllib.parse.SplitResult, timeout: float, ca_file: str
) -> http.client.HTTPConnection:
    if parts.scheme != "https":
        return http.client.HTTPConnection(parts.netloc, timeout=timeout)
    try:
        context = ssl.create_default_context(cafile=ca_file or None)
    except (OSError, ssl.SSLError):
        raise FetchFailed("tls") from None
    return http.client.HTTPSConnection(parts.netloc, timeout=timeout, context=context)


def fetch(url: str, *, timeout: float, token: str = "", ca_file: str = "") -> bytes:
    """GET ``url``; the whole exchange must end within ``timeout`` seconds and the body stay
    under ``POD_LIST_MAX_BYTES``. Raises ``FetchFailed`` with a bounded reason."""
    parts = urllib.parse.urlsplit(url)
    deadline = time.monotonic() + timeout
    conn = _connection(parts, timeout, ca_file)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request("GET", target, headers=headers)
        response = conn.getresponse()
        if response.status != 200:
            raise FetchFailed("http_status")
        chunks, total = [], 0
        while chunk := response.read(1 << 16):
            total += len(chunk)
            if total > POD_LIST_MAX_BYTES:
                raise FetchFailed("too_large")
            if time.monotonic() > deadline:
                raise FetchFailed("timeout")
            chunks.append(chunk)
        return b"".join(chunks)
    except TimeoutError:
        raise FetchFailed("timeout") from None
    except ssl.SSLError:
        raise FetchFailed("tls") from None
    except (OSError, http.client.HTTPException):
        raise FetchFailed("unreachable") from None
    finally:
        conn.close()


class PodDirectory:
    """The pod list of one node, cached: ``pods(now)`` for a round, ``known(uid)`` after it."""

    def __init__(
        self,
        url: str,
        meter: Meter,
        *,
        refresh: float = 30.0,
        timeout: float = 2.0,
        token_file: str = "",
        ca_file: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.meter = meter
        self.refresh = refresh
        self.timeout = timeout
        self.token_file = token_file
        self.ca_file = ca_file
        self._clock = clock
        self._pods: dict[str, PodMeta] = {}
        self._last_try: float | None = None

    def pods(self, wanted: set[str] | None = None) -> Mapping[str, PodMeta]:
        """The pods as last fetched, fetched again first when due: ``refresh`` seconds after
        the last attempt, or ``MISS_RETRY`` after it when a UID in ``wanted`` is missing."""
        now = self._clock()
        since = None if self._last_try is None else now - self._last_try
        due = since is None or since >= self.refresh
        if not due and wanted and since is not None and since >= MISS_RETRY:
            due = not wanted <= self._pods.keys()
        if due:
            self._fetch(now)
        return self._pods

    def _fetch(self, now: float) -> None:
        self._last_try = now
        try:
            token = ""
            if self.token_file:
                try:
                    token = _read_file(self.token_file, TOKEN_MAX_BYTES).decode().strip()
                except (OSError, UnicodeDecodeError):
                    raise FetchFailed("token") from None
            data = fetch(self.url, timeout=self.timeout, token=token, ca_file=self.ca_file)
            self._pods = parse_pod_list(data)
        except FetchFailed as failed:
            self.meter.inc(POD_LIST_FETCHES, result=failed.reason)
            return
        self.meter.inc(POD_LIST_FETCHES, result="ok")
