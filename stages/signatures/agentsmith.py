"""agent-smith's JSON signature config, read as it is and validated.

The shape is ``{"blocklists": {"very"|"audit"|"barely": {"binaries": [str], "allowlist":
[regexp], "signatures": [signature]}}}``; every other top-level key of agent-smith's config is
ignored, so its whole config file can be given. A signature is ``{name, domain, kind, pattern
(base64), regexp, slice: {start, end}, filenames}``.

Like Go's encoding/json, keys match case-insensitively and ``null`` means the zero value.
Unlike it, an unknown key inside ``blocklists`` is refused (a misspelt ``regex`` would
otherwise silently turn a regexp into a literal), and so are an unknown kind or domain and an
empty ``binaries`` entry (which would match every process). Every refusal is a
``SignatureError`` naming the file, the signature and the field.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from stages.base.schema import Level
from stages.signatures.model import (
    LEVELS,
    CommandlineRules,
    Domain,
    Kind,
    Signature,
    SignatureError,
    SignatureFile,
)

_INT64_MAX = 2**63 - 1
_LEVEL_KEYS = frozenset({"binaries", "allowlist", "signatures"})
_SIGNATURE_KEYS = frozenset({"name", "domain", "kind", "pattern", "regexp", "slice", "filenames"})
_SLICE_KEYS = frozenset({"start", "end"})


def _fields(value: object, where: str, known: frozenset[str]) -> dict[str, Any]:
    """A JSON object's members with lower-cased keys; unknown keys are refused."""
    if not isinstance(value, dict):
        raise SignatureError(f"{where}: expected an object, got {_json_type(value)}")
    out: dict[str, Any] = {}
    for key, member in value.items():
        folded = key.lower()
        if folded not in known:
            known_list = ", ".join(sorted(known))
            raise SignatureError(f"{where}: unknown field {key!r} (known: {known_list})")
        out[folded] = member
    return out


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if type(value) in (int, float):
        return "a number"
    return names.get(type(value), type(value).__name__)


def _str(value: object, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SignatureError(f"{where}: expected a string, got {_json_type(value)}")
    return value


def _strings(value: object, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise SignatureError(f"{where}: expected an array of strings, got {_json_type(value)}")
    return tuple(_str(item, f"{where}[{i}]") for i, item in enumerate(value))


def _offset(value: object, where: str) -> int:
    if value is None:
        return 0
    if type(value) is not int:  # bool is an int subclass; 1.0 is refused by Go too
        raise SignatureError(f"{where}: expected an integer, got {_json_type(value)}")
    if value < 0:
        raise SignatureError(f"{where}: must not be negative, got {value}")
    if value > _INT64_MAX:
        raise SignatureError(f"{where}: too large ({value})")
    return value


def _pattern(value: object, where: str) -> bytes:
    text = _str(value, where)
    # Go's base64 decoder skips line breaks; it insists on padding, as validate=True does.
    text = text.replace("\r", "").replace("\n", "")
    try:
        pattern = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{where}: not valid base64") from None
    if not pattern:
        raise SignatureError(f"{where}: the signature has no pattern")
    return pattern


def _signature(value: object, level: Level, where: str, index: int) -> Signature:
    fields = _fields(value, where, _SIGNATURE_KEYS)
    name = _str(fields.get("name"), f"{where}: name") or f"{level}.signatures[{index}]"
    sig = f"{where} {name!r}"  # every later message names the signature
    kind_text = _str(fields.get("kind"), f"{sig}: kind")
    try:
        kind = Kind(kind_text)
    except ValueError:
        raise SignatureError(
            f'{sig}: kind: unknown kind {kind_text!r} (expected "", "elf" or "elf-rodata")'
        ) from None
    domain_text = _str(fields.get("domain"), f"{sig}: domain") or Domain.FILESYSTEM
    try:
        domain = Domain(domain_text)
    except ValueError:
        raise SignatureError(
            f'{sig}: domain: unknown domain {domain_text!r} (expected "process" or "filesystem")'
        ) from None
    regexp = fields.get("regexp")
    if regexp is not None and not isinstance(regexp, bool):
        raise SignatureError(f"{sig}: regexp: expected a boolean, got {_json_type(regexp)}")
    pattern = _pattern(fields.get("pattern"), f"{sig}: pattern")
    start, end = 0, 0
    if fields.get("slice") is not None:
        slice_ = _fields(fields["slice"], f"{sig}: slice", _SLICE_KEYS)
        start = _offset(slice_.get("start"), f"{sig}: slice.start")
        end = _offset(slice_.get("end"), f"{sig}: slice.end")
    if kind is Kind.ELF_SYMBOLS and (start or end):
        raise SignatureError(f'{sig}: slice: a slice cannot be used with kind "elf"')
    if start and end and end <= start:
        raise SignatureError(f"{sig}: slice.end: must be greater than slice.start ({start})")
    if regexp:
        try:
            pattern.decode("utf-8")
        except UnicodeDecodeError:
            raise SignatureError(f"{sig}: pattern: a regexp must be UTF-8 text") from None
    return Signature(
        name=name,
        level=level,
        domain=domain,
        kind=kind,
        pattern=pattern,
        regexp=bool(regexp),
        slice_start=start,
        slice_end=end,
        filenames=_strings(fields.get("filenames"), f"{sig}: filenames"),
        index=index,
    )


def parse_agent_smith(data: bytes, path: str) -> SignatureFile:
    """Validate one agent-smith JSON file; raises ``SignatureError`` and nothing else."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as err:
        raise SignatureError(f"{path}: not valid JSON: {err}") from None
    if not isinstance(document, dict):
        raise SignatureError(f"{path}: expected a JSON object, got {_json_type(document)}")
    top = {key.lower(): value for key, value in document.items()}
    if "blocklists" not in top:
        raise SignatureError(f'{path}: no "blocklists" key: not an agent-smith signature config')
    blocklists = top["blocklists"] if top["blocklists"] is not None else {}
    levels = _fields(blocklists, f"{path}: blocklists", frozenset(LEVELS))
    signatures: list[Signature] = []
    commandline: list[CommandlineRules] = []
    for level in LEVELS:
        if levels.get(level) is None:
            continue
        where = f"{path}: blocklists.{level}"
        fields = _fields(levels[level], where, _LEVEL_KEYS)
        binaries = _strings(fields.get("binaries"), f"{where}: binaries")
        for i, binary in enumerate(binaries):
            if not binary:
                raise SignatureError(
                    f"{where}: binaries[{i}]: empty (it would match every process)"
                )
        allowlist = _strings(fields.get("allowlist"), f"{where}: allowlist")
        if binaries or allowlist:
            commandline.append(CommandlineRules(level, allowlist, binaries))
        raw = fields.get("signatures")
        if raw is not None and not isinstance(raw, list):
            raise SignatureError(
                f"{where}: signatures: expected an array of signatures, got {_json_type(raw)}"
            )
        for i, item in enumerate(raw or ()):
            signatures.append(_signature(item, level, f"{where}.signatures[{i}]", i))
    return SignatureFile(path, tuple(signatures), tuple(commandline))
