"""scan, tree, classify and filter in one process: ``procsmith once`` and the library API.

    detector = LocalDetector(load_config())
    new = detector.round()   # the user workloads not judged before, ascending by pid

Each call is one scan round against the same LRU; what ``round`` returns counts as handed
on (D7), so it is not returned again unless it execs (D8) or what it runs changes (D10: its
argv rewritten, or its executable mappings). A process's first record carries no mappings
(the scan reads them from its first full re-read on, or once it has run since its first
read), so one record of a live process may come again once, with them.
"""

from __future__ import annotations

from pipeline.builders import scan_reader, workspace_providers
from pipeline.configschema import Config
from stages.base.meter import Meter, Tally
from stages.base.schema import Process
from stages.classify import classify_round
from stages.filter import SeenFilter
from stages.tree import merge


class LocalDetector:
    def __init__(self, config: Config, meter: Meter | None = None) -> None:
        self.meter = meter if meter is not None else Tally()
        self.reader = scan_reader(config, self.meter)
        self.filter = SeenFilter(config.filter.lru_size, self.meter)
        self.providers = workspace_providers(config, self.meter)
        self.rounds = 0

    def round(self) -> list[Process]:
        self.rounds += 1
        scan = self.reader.read(self.rounds)
        workloads = classify_round(
            merge(self.rounds, [scan], expected=1), self.meter, self.providers
        )
        new = self.filter.unseen(workloads.procs)
        for proc in new:
            self.filter.mark_seen(proc)
        return new
