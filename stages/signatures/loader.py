"""``load_signatures``: signature files (agent-smith JSON, YARA) into one ``SignatureSet``.

A file named ``*.yar`` or ``*.yara`` is YARA source; any other is agent-smith JSON. Each file
gets its own YARA-X namespace, so rule names may repeat across files. A YARA rule's level is
its ``level`` metadata (very, audit or barely), audit when it has none — agent-smith's
default level. Every problem is one ``SignatureError`` naming file, signature and field.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yara_x

from stages.base.schema import Level
from stages.signatures.agentsmith import parse_agent_smith
from stages.signatures.exefile import Unjudgeable, open_regular, read_prefix
from stages.signatures.model import (
    CLASSIFIER_COMMANDLINE,
    CLASSIFIER_SIGNATURE,
    Hit,
    SignatureError,
    SignatureFile,
)
from stages.signatures.sigset import RuleKey, SignatureSet
from stages.signatures.yarasrc import (
    ALLOW_TEXT,
    BLOCK_TEXT,
    SourceError,
    allow_any_rule,
    allow_entry_rule,
    blocklist_rule,
    signature_rule,
)

MAX_SIGNATURE_FILE_BYTES = 16 << 20
YARA_SUFFIXES = frozenset({".yar", ".yara"})
_RULE_HEADER = re.compile(r"^\s*(?:(?:private|global)\s+)*rule\s+([A-Za-z_]\w*)", re.MULTILINE)


def _read(path: Path) -> bytes:
    """The file's bytes: a regular file only (a FIFO would block), bounded."""
    try:
        fd, identity = open_regular(str(path))
        try:
            data, truncated = read_prefix(fd, identity.size, MAX_SIGNATURE_FILE_BYTES)
        finally:
            os.close(fd)
    except Unjudgeable as err:
        raise SignatureError(f"{path}: cannot read: {err}") from None
    if truncated:
        raise SignatureError(f"{path}: larger than {MAX_SIGNATURE_FILE_BYTES} bytes")
    return data


def _first_error(compiler: yara_x.Compiler, fallback: yara_x.CompileError) -> dict[str, Any]:
    errors = compiler.errors()
    if errors:
        last: dict[str, Any] = errors[-1]
        return last
    return {"title": str(fallback).splitlines()[0], "labels": []}


def _reason(error: dict[str, Any]) -> str:
    """YARA-X's title and what it says at the spot, without its source excerpt."""
    labels = [label.get("text", "") for label in error.get("labels", []) if label.get("text")]
    return ": ".join([str(error.get("title", "error")), *labels])


class _Builder:
    """Adds files to two YARA-X compilers and remembers what each rule stands for."""

    def __init__(self) -> None:
        self.files = yara_x.Compiler(includes_enabled=False)
        self.argv = yara_x.Compiler(includes_enabled=False)
        self.argv.define_global(ALLOW_TEXT, b"")
        self.argv.define_global(BLOCK_TEXT, b"")
        self.file_hits: dict[RuleKey, Hit] = {}
        self.argv_hits: dict[RuleKey, Hit] = {}
        self.yara_namespaces: dict[str, tuple[str, int]] = {}  # namespace: (path, index)
        self.order = 0

    def start_file(self, index: int) -> None:
        """Hits keep the order of the files, then of the rules within each file."""
        self.order = index << 32

    def _next(self) -> int:
        self.order += 1
        return self.order

    def _add(self, compiler: yara_x.Compiler, source: str, where: str, field: str) -> None:
        try:
            compiler.add_source(source, origin=where)
        except yara_x.CompileError as err:
            reason = _reason(_first_error(compiler, err))
            raise SignatureError(f"{where}: {field}: {reason}") from None

    def add_agent_smith(self, parsed: SignatureFile, index: int) -> None:
        namespace = f"agentsmith_{index}"
        self.start_file(index)
        self.files.new_namespace(namespace)
        for i, sig in enumerate(parsed.signatures):
            where = f"{parsed.path}: {sig.where}"
            identifier = f"sig_{i}"
            try:
                source = signature_rule(sig, identifier)
            except SourceError as err:
                raise SignatureError(f"{where}: pattern: {err}") from None
            self._add(self.files, source, where, "pattern")
            self.file_hits[(namespace, identifier)] = Hit(
                sig.name, sig.level, CLASSIFIER_SIGNATURE, self._next()
            )
        self.argv.new_namespace(namespace)
        for rules in parsed.commandline:
            where = f"{parsed.path}: blocklists.{rules.level}"
            entries = []
            for i, regexp in enumerate(rules.allowlist):
                entries.append(f"allow_{rules.level}_{i}")
                try:
                    source = allow_entry_rule(regexp, entries[-1])
                except SourceError as err:
                    raise SignatureError(f"{where}: allowlist[{i}]: {err}") from None
                self._add(self.argv, source, where, f"allowlist[{i}]")
            allowed = f"allow_{rules.level}"
            self._add(self.argv, allow_any_rule(allowed, entries), where, "allowlist")
            for i, binary in enumerate(rules.binaries):
                identifier = f"block_{rules.level}_{i}"
                source = blocklist_rule(binary, allowed, identifier)
                self._add(self.argv, source, where, f"binaries[{i}]")
                self.argv_hits[(namespace, identifier)] = Hit(
                    binary, rules.level, CLASSIFIER_COMMANDLINE, self._next()
                )

    def add_yara(self, path: Path, data: bytes, index: int) -> None:
        namespace = f"yara_{index}"
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise SignatureError(f"{path}: not UTF-8 text") from None
        self.files.new_namespace(namespace)
        try:
            self.files.add_source(text, origin=str(path))
        except yara_x.CompileError as err:
            error = _first_error(self.files, err)
            line = int(error.get("line") or 0)
            rules = _RULE_HEADER.findall("\n".join(text.splitlines()[:line]))
            rule = f"rule {rules[-1]!r}, " if rules else ""
            raise SignatureError(f"{path}: {rule}line {line}: {_reason(error)}") from None
        self.yara_namespaces[namespace] = (str(path), index)

    def build(self, paths: tuple[str, ...]) -> SignatureSet:
        warnings = [
            _reason(w) + f" ({w['labels'][0]['code_origin']})"
            for w in self.files.warnings()
            if w.get("code") == "slow_pattern" and w.get("labels")
        ]
        file_rules = self.files.build()
        positions: dict[str, int] = {}
        for rule in file_rules:  # in the order they were compiled
            if rule.namespace not in self.yara_namespaces:
                continue
            path, index = self.yara_namespaces[rule.namespace]
            positions[rule.namespace] = positions.get(rule.namespace, 0) + 1
            order = (index << 32) + positions[rule.namespace]
            self.file_hits[(rule.namespace, rule.identifier)] = _yara_hit(path, rule, order)
        return SignatureSet(
            file_rules, self.file_hits, self.argv.build(), self.argv_hits, paths, warnings
        )


def _yara_hit(path: str, rule: yara_x.Rule, order: int) -> Hit:
    level = dict(rule.metadata).get("level", Level.AUDIT)
    try:
        return Hit(rule.identifier, Level(level), CLASSIFIER_SIGNATURE, order)
    except ValueError:
        raise SignatureError(
            f"{path}: rule {rule.identifier!r}: meta level: expected very, audit or barely, "
            f"got {level!r}"
        ) from None


def load_signatures(paths: Sequence[Path]) -> SignatureSet:
    """Read, validate and compile ``paths``; raises ``SignatureError`` and nothing else."""
    builder = _Builder()
    for index, path in enumerate(paths):
        data = _read(path)
        if path.suffix.lower() in YARA_SUFFIXES:
            builder.add_yara(path, data, index)
        else:
            builder.add_agent_smith(parse_agent_smith(data, str(path)), index)
    return builder.build(tuple(str(p) for p in paths))
