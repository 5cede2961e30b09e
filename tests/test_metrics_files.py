"""The node's metrics endpoint reads every stage process's metrics file; one that a just
restarted stage has created but not yet written must not break the scrape."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from pipeline.metrics import PromMeter, node_registry
from stages.base.catalog import RECORDS_IN

WRITE = """
import sys
from pipeline.metrics import PromMeter, enable_multiprocess
from stages.base.catalog import ROUNDS
enable_multiprocess(sys.argv[1])
PromMeter().inc(ROUNDS, 3)
"""


def test_unready_files_are_left_for_the_next_scrape(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-c", WRITE, str(tmp_path)], check=True, timeout=60)
    (tmp_path / "counter_1.db").touch()  # created, not yet sized
    (tmp_path / "gauge_mostrecent_2.db").write_bytes(b"\xff" * 64)  # garbage
    text = generate_latest(node_registry(str(tmp_path))).decode()
    assert "procsmith_rounds_total 3.0" in text


def test_prom_meter_refuses_names_and_labels_the_catalog_does_not_have() -> None:

    meter = PromMeter()
    with pytest.raises(KeyError):
        meter.inc("procsmith_no_such_total")
    with pytest.raises(KeyError):
        meter.inc(RECORDS_IN, stag="scan")  # the first use is checked against the catalog
    meter.inc(RECORDS_IN, stage="scan")
    wrong_labels: list[dict[str, str]] = [{"stag": "scan"}, {}, {"stage": "scan", "extra": "x"}]
    for wrong in wrong_labels:
        with pytest.raises(ValueError):  # later uses: prometheus-client refuses them
            meter.inc(RECORDS_IN, 1, **wrong)
