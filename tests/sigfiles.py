"""Writing agent-smith signature configs for tests."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any


def sig(
    name: str,
    pattern: bytes | str,
    *,
    kind: str = "",
    domain: str = "process",
    regexp: bool = False,
    start: int = 0,
    end: int = 0,
) -> dict[str, Any]:
    """One signature as agent-smith writes it: the pattern base64, empty fields omitted."""
    raw = pattern.encode() if isinstance(pattern, str) else pattern
    out: dict[str, Any] = {
        "name": name,
        "domain": domain,
        "kind": kind,
        "pattern": base64.b64encode(raw).decode(),
        "regexp": regexp,
    }
    if start or end:
        out["slice"] = {"start": start, "end": end}
    return out


def write_config(path: Path, **levels: dict[str, Any]) -> Path:
    """``write_config(p, very={"signatures": [...]}, audit={"binaries": [...]})``."""
    path.write_text(json.dumps({"blocklists": levels}))
    return path


def one_signature(path: Path, signature: dict[str, Any], level: str = "audit") -> Path:
    return write_config(path, **{level: {"signatures": [signature]}})
