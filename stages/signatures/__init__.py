"""Signature matching: agent-smith JSON and YARA rules compiled into YARA-X.

signatures = load_signatures([Path("config/signatures.json"), Path("extra.yar")])
hits = signatures.judge_file("/usr/bin/xmrig", max_bytes=64 << 20)  # most severe first
hits += signatures.judge_argv(["./xmrig", "-o", "stratum+tcp://pool:3333"])
"""

from stages.signatures.exefile import Executable, Identity, Unjudgeable, read_executable
from stages.signatures.loader import load_signatures
from stages.signatures.model import (
    CLASSIFIER_COMMANDLINE,
    CLASSIFIER_SIGNATURE,
    Hit,
    SignatureError,
    most_severe_first,
)
from stages.signatures.sigset import SignatureSet, engine_library

__all__ = [
    "CLASSIFIER_COMMANDLINE",
    "CLASSIFIER_SIGNATURE",
    "Executable",
    "Hit",
    "Identity",
    "SignatureError",
    "SignatureSet",
    "Unjudgeable",
    "engine_library",
    "load_signatures",
    "most_severe_first",
    "read_executable",
]
