"""The match stage's logic. (Placeholder until signature matching lands: every process is
judged clean, after the configured artificial delay.)"""

from __future__ import annotations

import time
from collections.abc import Sequence

from pipeline.config import Config
from pipeline.meter import Meter
from pipeline.schema import Judged, Process, Record
from pipeline.stage import Stage


class MatchStage(Stage):
    accepts = (Process,)

    def __init__(self, config: Config, meter: Meter) -> None:
        self.delay = config.match.delay
        self.meter = meter

    def handle(self, record: Record, now: float) -> Sequence[Record]:
        assert isinstance(record, Process)  # noqa: S101 - the runner checks `accepts`
        if self.delay:
            time.sleep(self.delay)
        return [Judged(record, "clean")]
