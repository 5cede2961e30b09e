"""How stage logic counts without knowing about Prometheus.

A stage takes a ``Meter``; the runner hands it one backed by prometheus-client, while unit
tests and ``procsmith once`` hand it a ``Tally``, a plain dictionary.
"""

from __future__ import annotations

from typing import Protocol

from stages.base.catalog import CATALOG


class Meter(Protocol):
    def inc(self, name: str, amount: float = 1, **labels: str) -> None: ...

    def set(self, name: str, value: float, **labels: str) -> None: ...

    def observe(self, name: str, value: float, **labels: str) -> None: ...


def check_labels(name: str, labels: dict[str, str]) -> None:
    """Refuse a name missing from the catalog or labels other than those it declares."""
    spec = CATALOG.get(name)
    if spec is None:
        raise KeyError(f"metric {name!r} is not in stages.base.catalog")
    if tuple(sorted(labels)) != tuple(sorted(spec.labels)):
        raise KeyError(f"metric {name!r} takes labels {spec.labels}, got {tuple(labels)}")


class Tally:
    """A Meter that keeps values in a dict keyed by (name, sorted label items)."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.observations: dict[tuple[str, tuple[tuple[str, str], ...]], list[float]] = {}

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        check_labels(name, labels)
        key = (name, tuple(sorted(labels.items())))
        self.values[key] = self.values.get(key, 0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        check_labels(name, labels)
        self.values[(name, tuple(sorted(labels.items())))] = value

    def observe(self, name: str, value: float, **labels: str) -> None:
        check_labels(name, labels)
        self.observations.setdefault((name, tuple(sorted(labels.items()))), []).append(value)

    def get(self, name: str, **labels: str) -> float:
        return self.values.get((name, tuple(sorted(labels.items()))), 0)
