"""``python -m bench`` (``make bench``): every benchmark of issues #5, #10 and #11, then one table.

bench/README.md says what each figure is, what was found profiling, and which targets hold.
"""

import os
import sys
import time
from collections.abc import Callable

from bench import (
    burst,
    discovery,
    eventstorm,
    judge_cost,
    latency,
    match_throughput,
    scan_cost,
    stall,
)
from bench.table import Table

# The burst runs with the default config, then with an LRU that holds every live workload:
# the difference is the re-judging of processes the default LRU (2,000) no longer holds.
BURST_VARIANTS = {
    "default config": {},
    "filter.lru_size 20,000": {"FILTER__LRU_SIZE": "20000"},
}


def timed(name: str, part: Callable[[], object]) -> object:
    start = time.monotonic()
    result = part()
    sys.stderr.write(f"bench: {name} took {time.monotonic() - start:.0f} s\n")
    return result


def main() -> int:
    table = Table()
    load = os.getloadavg()[0]
    start = time.monotonic()
    kernel_per_fd = scan_cost.run(table)
    sys.stderr.write(f"bench: scan cost took {time.monotonic() - start:.0f} s\n")
    timed("latency and memory", lambda: latency.run(table, kernel_per_fd))
    timed("stall-freedom", lambda: stall.run(table))
    timed("burst", lambda: burst.run(table, BURST_VARIANTS))
    timed("match throughput", lambda: match_throughput.rows(table))
    timed("judging what runs", lambda: judge_cost.run(table))
    timed("discovery: events vs poll", lambda: discovery.run(table))
    timed("events stage under a fork storm", lambda: eventstorm.run(table))
    sys.stdout.write(
        f"procsmith bench: {os.cpu_count()} CPUs, load average {load:.2f} at the start and "
        f"{os.getloadavg()[0]:.2f} at the end (other work on this machine shows in every figure)\n"
    )
    table.print()
    return 0


sys.exit(main())
