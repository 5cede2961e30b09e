"""Issue 10: the events stage under a fork storm of 2,000 execs a second for 30 seconds.

The supervised pipeline in event mode on the real /proc (default config); ``bench/execstorm.c``
(two spawners sharing the rate, bounded in count and time) spawns ``/bin/true`` meanwhile.
Measured: the events stage's CPU (utime + stime over the storm, as a share of one core), and
classify's; what the stage received, how often events were lost (each counted and followed by
a full read of procfs) and whether any stage was restarted.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.runs import cpu_seconds_of, pipeline_env, pipeline_processes, scrape, wait_rounds
from bench.table import Row, Table
from simulation.harness import Metrics, Pipeline

RATE = 2000.0
SECONDS = 30.0
SPAWNERS = 2
CPU_TARGET = 0.50
_STORM_SRC = Path(__file__).with_name("execstorm.c")


def _lost(m: Metrics) -> dict[str, float]:
    out = {}
    for (name, labels), value in m.samples.items():
        if name == "procsmith_events_lost_total":
            out[dict(labels)["reason"]] = value
    return out


def _restarts(m: Metrics) -> float:
    return sum(v for (n, _), v in m.samples.items() if n == "procsmith_stage_restarts_total")


# (what differs, the receive buffer in bytes or None for the default, seconds of storm)
VARIANTS = (
    ("default config (32 MiB socket buffer)", None, SECONDS),
    ("a 64 KiB socket buffer, to force losses", 65536, 10.0),
)


def run(table: Table) -> None:
    for label, rcvbuf, seconds in VARIANTS:
        storm_once(table, label, rcvbuf, seconds)


def storm_once(table: Table, label: str, rcvbuf: int | None, seconds: float) -> None:
    section = (
        f"8. events stage under a fork storm: {RATE:,.0f} execs/s of /bin/true asked for "
        f"{seconds:g} s (real /proc; {label})"
    )
    gcc = shutil.which("gcc")
    if gcc is None:
        table.add(Row(section, "needs gcc", "n/a"))
        return
    workdir = Path(tempfile.mkdtemp(prefix="procsmith-bench-storm-"))
    try:
        storm = workdir / "execstorm"
        subprocess.run([gcc, "-O2", "-o", str(storm), str(_STORM_SRC)], check=True)
        keys = {"EVENTS__MODE": "events"}
        if rcvbuf is not None:
            keys["EVENTS__RCVBUF_BYTES"] = str(rcvbuf)
        env = pipeline_env(workdir / "findings", **keys)
        with Pipeline("/proc", env) as pipe:
            wait_rounds(pipe, 1)
            before = scrape(pipe)
            procs = pipeline_processes(pipe)
            cpu0, t0 = cpu_seconds_of(procs), time.monotonic()
            share = str(RATE / SPAWNERS)
            spawners = [
                subprocess.Popen(
                    [str(storm), share, str(seconds)], stdout=subprocess.PIPE, text=True
                )
                for _ in range(SPAWNERS)
            ]
            results = [s.communicate(timeout=seconds + 60)[0].split() for s in spawners]
            time.sleep(2.0)  # what is queued is read; a full read that is due is made
            cpu1, window = cpu_seconds_of(procs), time.monotonic() - t0
            after = scrape(pipe)
        spawned = sum(int(n) for n, _ in results)
        took = max(float(t) for _, t in results)
        cpu = {k: (cpu1[k] - cpu0[k]) / window for k in procs if k in cpu1}
        received = after.get("procsmith_events_received_total", kind="exec") - before.get(
            "procsmith_events_received_total", kind="exec"
        )
        lost = {k: v - _lost(before).get(k, 0) for k, v in _lost(after).items()}
        lost = {k: v for k, v in lost.items() if v}
        full = after.get("procsmith_events_full_reads_total") - before.get(
            "procsmith_events_full_reads_total"
        )
        restarts = _restarts(after) - _restarts(before)
        events_cpu = cpu.get("events/0", 0.0)
        table.add(
            Row(section, f"storm: {spawned:,} execs in {took:.1f} s", f"{spawned / took:,.0f}/s")
        )
        table.add(Row(section, "execs the events stage received", f"{received:,.0f}",
                      f"{spawned:,} spawned", f"{received / max(1, spawned):.1%}"))  # fmt: skip
        table.add(Row(section, "events stage CPU (share of one core)", f"{events_cpu:.1%}", "",
                      "", f"<= {CPU_TARGET:.0%}", events_cpu <= CPU_TARGET))  # fmt: skip
        table.add(
            Row(section, "classify CPU (share of one core)", f"{cpu.get('classify/0', 0):.1%}")
        )
        losses = sum(lost.values())
        table.add(Row(section, f"losses counted {dict(lost) or 0}; full reads after them",
                      f"{full:.0f}", "", "", "a full read after any loss",
                      full >= 1 if losses else True))  # fmt: skip
        table.add(Row(section, "stage restarts during the storm", f"{restarts:.0f}", "", "", "0",
                      restarts == 0))  # fmt: skip
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    standalone = Table()
    run(standalone)
    standalone.print()
