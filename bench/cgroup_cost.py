"""Issue 14: what the cgroup workspace provider costs, on the real /proc.

2,000 extra sleeping processes, moved (when this machine lets root write cgroupfs) into 20
kubepods-shaped containers of 100 processes each, so the provider has work to do. Figures are
CPU µs per process of the measuring process, best of ``REPS`` (this VM's noise only adds):

- scan, steady round (blocks of ``RECHECK_EVERY`` rounds, as bench/scan_cost.py measures it)
  and first round, without and with ``read_cgroup``;
- classify, one round of the same records: Gitpod's rule alone, and gitpod then cgroup.

    python -m bench.cgroup_cost
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable

from simulation.cgroups import CgroupTree, Unavailable
from simulation.sleepers import Sleepers
from stages.base.meter import Tally
from stages.classify import build_index, classify, classify_round
from stages.procfs import list_pids, read_stat
from stages.providers import CgroupSelectors, Providers
from stages.shardreader import RECHECK_EVERY, ShardReader
from stages.statline import parse_stat
from stages.tree import merge

SLEEPERS = 2000
CONTAINERS = 20
REPS = 5


def cpu_seconds(run: Callable[..., object], *args: object) -> float:
    """CPU seconds (user and system) this process spends in ``run(*args)``."""
    start = time.process_time()
    run(*args)
    return time.process_time() - start


def children(parent: int) -> list[int]:
    found = []
    for pid in list_pids("/proc"):
        try:
            stat = parse_stat(read_stat(f"/proc/{pid}/stat"))
        except OSError:
            continue
        if stat is not None and stat.ppid == parent:
            found.append(pid)
    return found


def best(run: Callable[[], object], reps: int = REPS) -> float:
    samples = []
    for _ in range(reps):
        gc.collect()
        samples.append(cpu_seconds(run))
    return min(samples)


def steady_block(reader: ShardReader) -> float:
    return statistics.mean(cpu_seconds(reader.read, 0) for _ in range(RECHECK_EVERY))


def measure() -> dict[str, float]:
    figures: dict[str, float] = {}
    for label, flag in (("off", False), ("on", True)):
        figures[f"scan first, cgroup {label}"] = min(
            cpu_seconds(ShardReader("/proc", Tally(), read_cgroup=flag).read, 1)
            for _ in range(REPS)
        )
        reader = ShardReader("/proc", Tally(), read_cgroup=flag)
        reader.read(0)
        reader.read(0)
        figures[f"scan steady, cgroup {label}"] = min(steady_block(reader) for _ in range(REPS))
        reader.close()
    reader = ShardReader("/proc", Tally(), read_cgroup=True)
    rnd = merge(1, [reader.read(1)], expected=1)
    reader.close()
    figures["processes"] = len(rnd.procs)
    providers = Providers(["gitpod", "cgroup"], CgroupSelectors(), Tally())
    tally = Tally()
    workloads = classify_round(rnd, tally, providers)
    figures["attributed"] = len(workloads.procs)
    figures["classify, gitpod"] = best(lambda: classify_round(rnd, Tally()), 20)
    figures["classify, gitpod+cgroup"] = best(lambda: classify_round(rnd, tally, providers), 20)
    # The provider's own share: what find() adds to the Gitpod walk, without the records.
    index = build_index(rnd.procs)
    figures["  of which the cgroup provider"] = best(
        lambda: providers.find(index, rnd.procs), 20
    ) - best(lambda: classify(index), 20)
    return figures


def main() -> None:
    with Sleepers(SLEEPERS) as sleepers:
        moved = 0
        figures: dict[str, float]
        try:
            with CgroupTree("") as tree:
                pod, _uid = tree.pod()
                scopes = [tree.container(pod)[0] for _ in range(CONTAINERS)]
                for n, pid in enumerate(children(sleepers.helper_pid)):
                    tree.move(pid, scopes[n % CONTAINERS])
                    moved += 1
                figures = measure()
        except Unavailable as why:
            print(f"(no cgroups: {why}; the provider finds no containers)")
            figures = measure()
    count = figures.pop("processes")
    print(f"{count:.0f} processes, {moved} of them in {CONTAINERS} containers of one pod; "
          f"{figures.pop('attributed'):.0f} attributed")  # fmt: skip
    for name, seconds in figures.items():
        print(f"{name:32} {seconds / count * 1e6:7.2f} µs/process")


if __name__ == "__main__":
    main()
