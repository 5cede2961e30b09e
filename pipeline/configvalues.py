"""The forms config values are written in that TOML has no type for: durations (``250ms``,
``2s``) and addresses (``HOST:PORT``). ``pipeline.configschema`` declares keys of these
forms; the command line's ``--metrics-addr`` is read as an address too.
"""

from __future__ import annotations

import math
import re
from typing import ClassVar


class Duration(float):
    """Seconds, written in config as ``250ms``, ``2s``, ``1.5m`` or a plain number."""

    _FORM: ClassVar[re.Pattern[str]] = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)?")
    _UNIT: ClassVar[dict[str | None, float]] = {
        "ms": 0.001,
        "s": 1.0,
        "m": 60.0,
        "h": 3600.0,
        None: 1.0,
    }

    @classmethod
    def parse(cls, value: object) -> Duration:
        if isinstance(value, bool):
            raise ValueError(f"expected a duration such as '2s', got {value!r}")
        if isinstance(value, int | float):
            seconds = float(value)
        elif isinstance(value, str) and (m := cls._FORM.fullmatch(value.strip())):
            seconds = float(m[1]) * cls._UNIT[m[2]]
        else:
            raise ValueError(f"expected a duration such as '250ms' or '2s', got {value!r}")
        if not math.isfinite(seconds):
            raise ValueError(f"duration {value!r} is not a finite number of seconds")
        if seconds < 0 or seconds > 86400:
            raise ValueError(f"duration {value!r} is outside 0s to 24h")
        return cls(seconds)


def parse_addr(addr: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too); raises ValueError naming the problem."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {addr!r}")
    return host.strip("[]") or "127.0.0.1", int(port)
