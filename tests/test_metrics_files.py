"""The node's metrics endpoint reads every stage process's metrics file; one that a just
restarted stage has created but not yet written must not break the scrape."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client import generate_latest

from pipeline.metrics import node_registry

WRITE = """
from pipeline.catalog import ROUNDS
from pipeline.metrics import PromMeter
PromMeter().inc(ROUNDS, 3)
"""


def test_unready_files_are_left_for_the_next_scrape(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", WRITE], env=env, check=True, timeout=60)
    (tmp_path / "counter_1.db").touch()  # created, not yet sized
    (tmp_path / "gauge_mostrecent_2.db").write_bytes(b"\xff" * 64)  # garbage
    text = generate_latest(node_registry(str(tmp_path))).decode()
    assert "procsmith_rounds_total 3.0" in text
