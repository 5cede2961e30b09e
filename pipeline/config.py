"""Loading the typed configuration: TOML decoded into the Structs of
``pipeline.configschema``, then environment overrides.

Unknown keys, wrong types and impossible values are refused with a message that names the
file (or variable), the key and the reason.

Environment overrides: ``PROCSMITH_<KEY>`` for a top-level key and
``PROCSMITH_<SECTION>__<KEY>`` for a key of a section, e.g. ``PROCSMITH_SCAN__INTERVAL=1s``
(deeper tables likewise: ``PROCSMITH_ENFORCE__PENALTIES__VERY=kill-process``).
A value is read as a TOML value where it is one (``2000``, ``true``, ``["a", "b"]``) and as a
string otherwise (``1s``, ``/host/proc``).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from pipeline.configschema import BUNDLED_CONFIG_DIR, Config
from pipeline.configvalues import Duration

ENV_PREFIX = "PROCSMITH_"
CONFIG_ENV = "PROCSMITH_CONFIG"  # the config file, when no --config names one
# Variables with the prefix that are not config keys.
ENV_NOT_KEYS = frozenset({CONFIG_ENV})


class ConfigError(Exception):
    """A config that cannot be used; the message names where and why."""


def _decode_hook(type_: type, value: Any) -> Any:
    if type_ is Duration:
        return Duration.parse(value)
    raise NotImplementedError(f"no decoder for {type_!r}")


def _env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> list[str]:
    """Merge PROCSMITH_* variables into ``data``; return the names applied."""
    applied = []
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name in ENV_NOT_KEYS:
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        if not all(path):
            raise ConfigError(f"environment {name}: expected PROCSMITH_<SECTION>__<KEY>")
        target = data
        for part in path[:-1]:
            section = target.setdefault(part, {})
            if not isinstance(section, dict):
                raise ConfigError(f"environment {name}: {part!r} is not a section")
            target = section
        target[path[-1]] = _env_value(raw)
        applied.append(name)
    return applied


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (or only defaults when ``None``) and apply environment overrides."""
    source = str(path) if path is not None else "defaults"
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: not valid TOML: {err}") from None
    applied = _apply_env(data, environ or {})
    if applied:
        source += " with " + ", ".join(applied)
    try:
        config = msgspec.convert(data, Config, dec_hook=_decode_hook, strict=not applied)
    except msgspec.ValidationError as err:
        every = _every_error(Config, data, "", strict=not applied) or [str(err)]
        raise ConfigError(f"{source}: " + "; ".join(every)) from None  # all of them
    base = Path(os.path.abspath(path)).parent if path is not None else BUNDLED_CONFIG_DIR
    return _resolve_signature_paths(config, base)


_WHERE = re.compile(r" - at `\$[^`]*`$")


def _every_error(type_: type, data: object, prefix: str, *, strict: bool) -> list[str]:
    """Every bad key of ``data`` for the section ``type_``, each named as msgspec names one
    (it stops at the first): each key is converted alone, and a section whose keys are
    each fine is then converted whole for the checks between its keys."""
    errors: list[str] = []

    def bad(message: str, path: str) -> None:
        errors.append(f"{_WHERE.sub('', message)} - at `$.{path}`" if path else message)

    def convert(value: object, target: Any, path: str) -> None:
        try:
            msgspec.convert(value, target, dec_hook=_decode_hook, strict=strict)
        except msgspec.ValidationError as err:
            bad(str(err), path)

    here = prefix.rstrip(".")
    if not isinstance(data, dict):
        convert(data, type_, here)
        return errors
    fields = {f.encode_name: f for f in msgspec.structs.fields(type_)}
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            bad(f"Object contains unknown field `{key}`", here)
        elif isinstance(field.type, type) and issubclass(field.type, msgspec.Struct):
            errors += _every_error(field.type, value, f"{prefix}{key}.", strict=strict)
        else:
            try:
                msgspec.convert(
                    {key: value},
                    msgspec.defstruct("One", [(key, field.type)]),
                    dec_hook=_decode_hook,
                    strict=strict,
                )
            except msgspec.ValidationError as err:
                bad(str(err), f"{prefix}{key}")
    if not errors:
        convert(data, type_, here)
    return errors


def load_named_config(name: str | None, environ: Mapping[str, str]) -> Config:
    """The config a command was given: ``--config FILE``, else ``$PROCSMITH_CONFIG``, else
    the defaults; then the environment's overrides."""
    path = name or environ.get(CONFIG_ENV)
    return load_config(Path(path) if path else None, environ)


def _resolve_signature_paths(config: Config, base: Path) -> Config:
    """Signature paths relative to the config file's directory made absolute."""
    signatures = [str(base / p) if not os.path.isabs(p) else p for p in config.match.signatures]
    match = msgspec.structs.replace(config.match, signatures=signatures)
    return msgspec.structs.replace(config, match=match)
