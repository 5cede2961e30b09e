"""What a signature file says, once validated: signatures, command-line rules and hits.

Nothing here reads files or compiles anything; ``agentsmith`` builds these values from JSON
and ``compile`` turns them into YARA-X rules.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from stages.base.schema import Level

# Most severe first. agent-smith tries very, barely, audit and takes the first match, so a
# barely match hides an audit one; here the most severe match always wins.
LEVELS = (Level.VERY, Level.AUDIT, Level.BARELY)
SEVERITY = {level: rank for rank, level in enumerate(LEVELS)}

CLASSIFIER_COMMANDLINE = "commandline"
CLASSIFIER_SIGNATURE = "signature"
# Issue 11: a file the process runs that could not be read (its own finding kind).
CLASSIFIER_UNJUDGEABLE = "unjudgeable"
# Within one level the command line is tried first, as agent-smith's composite classifier does;
# anything that matched comes before "could not be read".
_CLASSIFIER_ORDER = {CLASSIFIER_COMMANDLINE: 0, CLASSIFIER_SIGNATURE: 1, CLASSIFIER_UNJUDGEABLE: 2}


class SignatureError(Exception):
    """A signature file that cannot be used; the message names file, signature, field, reason."""


class Kind(enum.StrEnum):
    """What part of a file a signature looks at (agent-smith's ObjectKind)."""

    ANY = ""  # every byte of the file
    ELF_SYMBOLS = "elf"  # the names in .symtab and .dynsym
    ELF_RODATA = "elf-rodata"  # the bytes of the .rodata section


class Domain(enum.StrEnum):
    """agent-smith's Domain. A process is judged with signatures of both domains, as the
    reference's process classifier does; a ``filesystem`` signature (the default when the
    field is empty) is searched for in the whole file, its kind only requiring an ELF file."""

    PROCESS = "process"
    FILESYSTEM = "filesystem"


@dataclass(frozen=True)
class Signature:
    """One agent-smith signature, validated.

    ``slice_end`` 0 means "to the end of the file". ``filenames`` is kept so a file
    round-trips, but processes are judged without it, as the reference does (it is used by
    agent-smith's filesystem scanner, which procsmith does not have).
    """

    name: str
    level: Level
    domain: Domain
    kind: Kind
    pattern: bytes
    regexp: bool = False
    slice_start: int = 0
    slice_end: int = 0
    filenames: tuple[str, ...] = ()
    index: int = 0  # its place in blocklists.<level>.signatures, for messages

    @property
    def where(self) -> str:
        return f"blocklists.{self.level}.signatures[{self.index}] {self.name!r}"


@dataclass(frozen=True)
class CommandlineRules:
    """One level's ``allowlist`` regexps and ``binaries`` substrings."""

    level: Level
    allowlist: tuple[str, ...] = ()
    binaries: tuple[str, ...] = ()


@dataclass(frozen=True)
class SignatureFile:
    """Everything one agent-smith JSON file declares, in file order."""

    path: str
    signatures: tuple[Signature, ...] = ()
    commandline: tuple[CommandlineRules, ...] = ()


class Hit(NamedTuple):
    """One rule that matched: what ``Finding`` is made of."""

    signature: str
    level: Level
    classifier: str
    order: int = 0  # position in the signature set, to keep file order among equals


def rank(hit: Hit) -> tuple[int, int, int]:
    """Most severe first; within a level, as ``_CLASSIFIER_ORDER`` says; then file order."""
    return (SEVERITY[hit.level], _CLASSIFIER_ORDER[hit.classifier], hit.order)


def most_severe_first(hits: list[Hit]) -> list[Hit]:
    return sorted(hits, key=rank)
