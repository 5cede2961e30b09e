"""The JSON-lines form of records, as the CLI and the tap print them (SPEC §3)."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from stages.base.schema import (
    PROCESS_JSON_FIELDS,
    ExecWorkloads,
    Filtered,
    Finding,
    Judged,
    Process,
    Record,
    Workloads,
    Workspace,
)

_LINE = orjson.OPT_APPEND_NEWLINE
# The workspace fields of SPEC §3, always printed; the others only when they say something.
_WORKSPACE_SPEC_FIELDS = frozenset({"owner_id", "workspace_id", "instance_id", "git_url", "pid"})
_WORKSPACE_DEFAULTS = {"provider": "gitpod"}


def workspace_dict(ws: Workspace) -> dict[str, Any]:
    """A workspace as SPEC §3 prints it. A Gitpod workspace keeps the SPEC's (and the
    reference's) five fields; a cgroup workspace adds its provider, container and pod."""
    return {
        name: value
        for name, value in msgspec.structs.asdict(ws).items()
        if name in _WORKSPACE_SPEC_FIELDS or value != _WORKSPACE_DEFAULTS.get(name, "")
    }


def process_dict(proc: Process) -> dict[str, Any]:
    """The SPEC §3 fields of a process record, in the SPEC's order."""
    out = {name: getattr(proc, name) for name in PROCESS_JSON_FIELDS}
    if proc.workspace is not None:
        out["workspace"] = workspace_dict(proc.workspace)
    return out


def finding_dict(finding: Finding) -> dict[str, Any]:
    """A finding (SPEC §3): the process record, then what matched and when."""
    return {
        "process": process_dict(finding.process),
        "signature": finding.signature,
        "level": finding.level,
        "classifier": finding.classifier,
        "time": finding.time,
        "file": finding.file,
        "file_role": finding.file_role,
    }


def record_dict(record: Record) -> dict[str, Any]:
    """Any record as JSON-ready data; processes inside it in their SPEC §3 form."""
    if isinstance(record, Process):
        return process_dict(record)
    if isinstance(record, Finding):
        return finding_dict(record)
    if isinstance(record, Judged):
        return {"process": process_dict(record.process), "outcome": record.outcome}
    if isinstance(record, Filtered):
        return msgspec.structs.asdict(record)
    if isinstance(record, Workloads | ExecWorkloads):
        out = msgspec.structs.asdict(record)
        out["procs"] = [process_dict(p) for p in record.procs]
        return out
    # ShardScan, Round and ExecBatch: their raw processes as objects rather than msgpack arrays.
    out = msgspec.structs.asdict(record)
    out["procs"] = [msgspec.structs.asdict(p) for p in record.procs]
    return out


def process_line(proc: Process) -> bytes:
    """One process as a JSON line, newline included."""
    return orjson.dumps(process_dict(proc), option=_LINE)


def tap_line(stage: str, record: Record) -> bytes:
    """What ``procsmith tap`` prints: the emitting stage, the record's type and the record."""
    kind = type(record).__struct_config__.tag
    return orjson.dumps({"stage": stage, "type": kind, "record": record_dict(record)}, option=_LINE)


def finding_line(finding: Finding) -> bytes:
    """One finding as a JSON line, newline included; ``time`` is RFC 3339."""
    return orjson.dumps(finding_dict(finding), option=_LINE)
