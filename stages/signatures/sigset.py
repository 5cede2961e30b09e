"""A compiled signature set: one YARA-X scan judges a file against every signature.

Built by ``load_signatures``. A ``SignatureSet`` owns its YARA-X scanners, which are not
thread-safe: use one set per process (each match replica loads its own).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

import yara_x

from stages.signatures.exefile import Unjudgeable, read_executable
from stages.signatures.model import Hit, most_severe_first
from stages.signatures.yarasrc import ALLOW_TEXT, BLOCK_TEXT, allow_text, block_text

RuleKey = tuple[str, str]  # (namespace, identifier) of a compiled rule


def engine_library() -> str:
    """The file of YARA-X's compiled extension (its compiler and its scanner), as the
    process's maps name it."""
    engine = sys.modules["yara_x.yara_x"]  # the extension the package loads (no stub names it)
    return os.path.realpath(str(engine.__file__))


@dataclass
class SignatureSet:
    """File rules (agent-smith signatures and YARA rules) and command-line rules.

    ``file_hits``/``argv_hits`` say what each compiled rule stands for. ``warnings`` holds
    what YARA-X warned about (slow patterns), for ``procsmith signatures check``.
    """

    file_rules: yara_x.Rules
    file_hits: dict[RuleKey, Hit]
    argv_rules: yara_x.Rules
    argv_hits: dict[RuleKey, Hit]
    paths: tuple[str, ...] = ()
    warnings: list[str] = field(default_factory=list)
    timeout: int = 10
    _file_scanner: yara_x.Scanner | None = field(default=None, repr=False)
    _argv_scanner: yara_x.Scanner | None = field(default=None, repr=False)

    @property
    def signature_count(self) -> int:
        return len(self.file_hits)

    @property
    def commandline_count(self) -> int:
        return len(self.argv_hits)

    def set_timeout(self, seconds: float) -> None:
        """Bound one scan; YARA-X counts whole seconds, so this rounds up (at least 1)."""
        self.timeout = max(1, int(-(-seconds // 1)))
        if self._file_scanner is not None:
            self._file_scanner.set_timeout(self.timeout)

    def _scanner(self) -> yara_x.Scanner:
        if self._file_scanner is None:
            self._file_scanner = yara_x.Scanner(self.file_rules)
            self._file_scanner.set_timeout(self.timeout)
        return self._file_scanner

    def judge_bytes(self, data: bytes) -> list[Hit]:
        """The file rules ``data`` matches, most severe first.

        Raises ``Unjudgeable("timeout")`` when the scan ran past the timeout.
        """
        try:
            results = self._scanner().scan(data)
        except yara_x.TimeoutError:
            raise Unjudgeable("timeout", f"scan took over {self.timeout}s") from None
        except yara_x.ScanError as err:
            raise Unjudgeable("scan_error", str(err)) from None
        return most_severe_first(
            [self.file_hits[(r.namespace, r.identifier)] for r in results.matching_rules]
        )

    def judge_file(self, path: str, max_bytes: int) -> list[Hit]:
        """The file rules the first ``max_bytes`` of ``path`` match; raises ``Unjudgeable``."""
        return self.judge_bytes(read_executable(path, max_bytes).data)

    def judge_argv(self, argv: list[str]) -> list[Hit]:
        """The command-line rules ``argv`` matches, most severe first.

        Per level, as agent-smith: if an allowlist regexp matches the argv (as Go prints a
        slice: ``[a b c]``), the level's blocklist is not looked at; otherwise a blocklist
        entry matches when it is a substring of the argv joined with ``|``.
        """
        if not self.argv_hits or not argv:
            return []
        if self._argv_scanner is None:
            self._argv_scanner = yara_x.Scanner(self.argv_rules)
        scanner = self._argv_scanner
        scanner.set_global(ALLOW_TEXT, allow_text(argv))
        scanner.set_global(BLOCK_TEXT, block_text(argv))
        results = scanner.scan(b"")
        return most_severe_first(
            [self.argv_hits[(r.namespace, r.identifier)] for r in results.matching_rules]
        )
