"""Which rules of a signature set are too slow to use: each run once against a small probe.

A rule whose condition loops over the file (``for all i in (0..filesize)``) passes every
compile check and then times out on every executable, so every process is "not judged".
``slow_rules`` scans a small probe with the whole set; if that times out, each YARA rule is
compiled alone (with its file's imports) and scanned again, to name the ones to blame.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import yara_x

from stages.signatures.loader import YARA_SUFFIXES
from stages.signatures.sigset import SignatureSet

PROBE_TIMEOUT = 1  # seconds (YARA-X counts whole seconds)
# 64 KiB: an ELF header, then every byte value over and over (a loop over the file runs
# 65,536 times: a rule that cannot take that cannot take a real executable either).
PROBE = b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 256
_IMPORT = re.compile(r'^\s*import\s+"[^"]*"\s*$', re.MULTILINE)
_RULE_START = re.compile(r"^\s*(?:(?:private|global)\s+)*rule\s+([A-Za-z_]\w*)", re.MULTILINE)


def _times_out(rules: yara_x.Rules) -> bool:
    scanner = yara_x.Scanner(rules)
    scanner.set_timeout(PROBE_TIMEOUT)
    try:
        scanner.scan(PROBE)
    except yara_x.TimeoutError:
        return True
    except yara_x.ScanError:
        return False
    return False


def slow_rules(signatures: SignatureSet) -> list[str]:
    """What times out on the probe, each as ``FILE: rule NAME`` (or the file, or the whole
    set, when the culprit cannot be compiled alone); empty when nothing does."""
    if not _times_out(signatures.file_rules):
        return []
    named: list[str] = []
    for path in signatures.paths:
        if Path(path).suffix.lower() not in YARA_SUFFIXES:
            continue
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # it compiled a moment ago; if it is gone now, the load check says so
        imports = "\n".join(_IMPORT.findall(text))
        starts = [m.start() for m in _RULE_START.finditer(text)] + [len(text)]
        alone_failed = False
        for begin, end in itertools.pairwise(starts):
            chunk = text[begin:end]
            name = _RULE_START.match(chunk)
            try:
                rules = yara_x.compile(imports + "\n" + chunk)
            except yara_x.CompileError:
                alone_failed = True  # it uses another rule: judged with its file below
                continue
            if _times_out(rules):
                named.append(f"{path}: rule {name[1] if name else '?'}")
        if alone_failed and not any(n.startswith(f"{path}:") for n in named):
            try:
                whole = yara_x.compile(text)
            except yara_x.CompileError:
                continue
            if _times_out(whole):
                named.append(f"{path}: a rule that uses another")
    return named or ["the signature set as a whole"]
