"""The JSON-lines form of records, as the CLI and the tap print them (SPEC §3)."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from pipeline.schema import PROCESS_JSON_FIELDS, Finding, Process


def process_dict(proc: Process) -> dict[str, Any]:
    """The SPEC §3 fields of a process record, in the SPEC's order."""
    out = {name: getattr(proc, name) for name in PROCESS_JSON_FIELDS}
    if proc.workspace is not None:
        out["workspace"] = msgspec.structs.asdict(proc.workspace)
    return out


def process_line(proc: Process) -> bytes:
    """One process as a JSON line, newline included."""
    return orjson.dumps(process_dict(proc), option=orjson.OPT_APPEND_NEWLINE)


def finding_dict(finding: Finding) -> dict[str, Any]:
    """A finding (SPEC §3): the process record, then what matched and when."""
    return {
        "process": process_dict(finding.process),
        "signature": finding.signature,
        "level": finding.level,
        "classifier": finding.classifier,
        "time": finding.time,
    }


def finding_line(finding: Finding) -> bytes:
    """One finding as a JSON line, newline included; ``time`` is RFC 3339."""
    return orjson.dumps(finding_dict(finding), option=orjson.OPT_APPEND_NEWLINE)
