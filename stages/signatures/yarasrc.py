"""agent-smith signatures and command-line rules written as YARA-X rule source.

Every signature becomes one rule, so one scan of an executable evaluates all of them:
- kind ``""`` (and every ``filesystem`` signature): the pattern anywhere in the file, or
  wholly inside ``[slice.start, slice.end)``; a slice end past the end of the file never
  matches (agent-smith's documented rule). A filesystem signature of an ELF kind also needs
  the ELF magic, as the reference checks it before its text match.
- kind ``elf``: a name in ``elf.symtab`` or ``elf.dynsym`` containing (or matching) the pattern.
- kind ``elf-rodata``: the pattern wholly inside a ``.rodata`` section holding file bytes.
Literal patterns are hex strings and every other byte that reaches the source is escaped, so
no pattern can end its literal early and add rule text of its own.
"""

from __future__ import annotations

from stages.signatures.model import Domain, Kind, Signature

ELF_MAGIC = "uint32(0) == 0x464C457F"  # b"\x7fELF" read little-endian
_REGEXP_NEEDS_NO_ESCAPE = frozenset(range(0x20, 0x7F)) - {ord("/")}


class SourceError(ValueError):
    """A pattern that cannot be written as YARA source; the caller adds where it came from."""


def hex_string(data: bytes) -> str:
    return "{ " + data.hex(" ") + " }"


def text_literal(data: bytes) -> str:
    """A YARA text literal with every byte escaped: nothing in ``data`` is ever syntax."""
    return '"' + "".join(f"\\x{b:02x}" for b in data) + '"'


def regexp_literal(pattern: str) -> str:
    """``/pattern/`` for a Go-syntax regexp.

    Escape pairs are copied whole, so ``\\/`` stays one token; a bare ``/`` and control
    characters are escaped. A trailing lone backslash, or a backslash before a control
    character, is refused as Go's parser refuses it.
    """
    out: list[str] = []
    chars = iter(pattern)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, None)
            if nxt is None:
                raise SourceError("a regexp cannot end with a lone backslash")
            if ord(nxt) < 0x20 or ord(nxt) == 0x7F:
                raise SourceError(f"invalid escape of control character {ord(nxt):#04x}")
            out.append("\\" + nxt)
        elif ch == "/":
            out.append("\\/")
        elif ord(ch) < 0x80 and ord(ch) not in _REGEXP_NEEDS_NO_ESCAPE:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "/" + "".join(out) + "/"


def _pattern_decl(sig: Signature) -> str:
    if sig.regexp:
        return regexp_literal(sig.pattern.decode("utf-8"))
    return hex_string(sig.pattern)


def _within(lows: list[str], highs: list[str]) -> str:
    """Some match of ``$p`` starts at or after every low bound and ends by every high bound."""
    bounds = [f"@p[k] >= {lo}" for lo in lows] + [f"@p[k] + !p[k] <= {hi}" for hi in highs]
    if not bounds:
        return "$p"
    return f"for any k in (1..#p) : ({' and '.join(bounds)})"


def _condition(sig: Signature) -> tuple[str | None, str]:
    """The pattern declaration (or ``None``) and the condition of a signature's rule."""
    lows = [str(sig.slice_start)] if sig.slice_start else []
    highs = [str(sig.slice_end)] if sig.slice_end else []
    terms = [f"filesize >= {sig.slice_end}"] if sig.slice_end else []
    if sig.domain is Domain.FILESYSTEM or sig.kind is Kind.ANY:
        if sig.domain is Domain.FILESYSTEM and sig.kind is not Kind.ANY:
            terms.insert(0, ELF_MAGIC)
        return _pattern_decl(sig), " and ".join([*terms, _within(lows, highs)])
    if sig.kind is Kind.ELF_SYMBOLS:
        test = (
            f"s.name matches {_pattern_decl(sig)}"
            if sig.regexp
            else f"s.name contains {text_literal(sig.pattern)}"
        )
        return None, f"for any s in elf.symtab : ({test}) or for any s in elf.dynsym : ({test})"
    # elf-rodata: inside the section, and inside the slice too where one is given.
    within = _within(["sec.offset", *lows], ["sec.offset + sec.size", *highs])
    in_rodata = (
        'for any sec in elf.sections : (sec.name == ".rodata" and sec.type != elf.SHT_NOBITS'
        f" and {within})"
    )
    return _pattern_decl(sig), " and ".join([*terms, in_rodata])


def signature_rule(sig: Signature, identifier: str) -> str:
    """One signature as a complete YARA-X source (its own ``import``, so it compiles alone)."""
    declaration, condition = _condition(sig)
    strings = f"  strings:\n    $p = {declaration}\n" if declaration is not None else ""
    return f'import "elf"\nrule {identifier} {{\n{strings}  condition:\n    {condition}\n}}\n'


# The two texts agent-smith's command-line classifier looks at: Go's fmt "%v" of the argv for
# the allowlist, and the argv joined with "|" for the blocklist.
ALLOW_TEXT = "allow_text"
BLOCK_TEXT = "block_text"


# "surrogatepass": a string holding a lone surrogate still encodes (and never raises).
def allow_text(argv: list[str]) -> bytes:
    return ("[" + " ".join(argv) + "]").encode("utf-8", "surrogatepass")


def block_text(argv: list[str]) -> bytes:
    return "|".join(argv).encode("utf-8", "surrogatepass")


def allow_entry_rule(regexp: str, identifier: str) -> str:
    """A private rule true when one allowlist regexp matches the argv."""
    return (
        f"private rule {identifier} {{\n  condition:\n"
        f"    {ALLOW_TEXT} matches {regexp_literal(regexp)}\n}}\n"
    )


def allow_any_rule(identifier: str, entries: list[str]) -> str:
    """A private rule true when any of a level's allowlist entries matched."""
    return (
        f"private rule {identifier} {{\n  condition:\n    {' or '.join([*entries, 'false'])}\n}}\n"
    )


def blocklist_rule(binary: str, allow_identifier: str, identifier: str) -> str:
    """A rule true when the argv holds ``binary`` and the level's allowlist did not match."""
    needle = text_literal(binary.encode("utf-8", "surrogatepass"))
    return (
        f"rule {identifier} {{\n  condition:\n"
        f"    not {allow_identifier} and {BLOCK_TEXT} contains {needle}\n}}\n"
    )
