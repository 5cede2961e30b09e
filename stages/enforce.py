"""The enforce stage's logic. (Placeholder until enforcement lands: findings are written to
stdout as JSON lines.)"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pipeline.config import Config
from pipeline.meter import Meter
from pipeline.render import record_line
from pipeline.schema import Finding, Record
from pipeline.stage import Stage


class EnforceStage(Stage):
    accepts = (Finding,)

    def __init__(self, config: Config, meter: Meter) -> None:
        self.meter = meter

    def handle(self, record: Record, now: float) -> Sequence[Record]:
        sys.stdout.buffer.write(record_line(record))
        sys.stdout.flush()
        return [record]
