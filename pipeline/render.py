"""The JSON-lines form of records, as the CLI and the tap print them (SPEC §3)."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from pipeline.schema import PROCESS_JSON_FIELDS, Process


def process_dict(proc: Process) -> dict[str, Any]:
    """The SPEC §3 fields of a process record, in the SPEC's order."""
    out = {name: getattr(proc, name) for name in PROCESS_JSON_FIELDS}
    if proc.workspace is not None:
        out["workspace"] = msgspec.structs.asdict(proc.workspace)
    return out


def process_line(proc: Process) -> bytes:
    """One process as a JSON line, newline included."""
    return orjson.dumps(process_dict(proc), option=orjson.OPT_APPEND_NEWLINE)
