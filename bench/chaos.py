"""The long chaos run: ``python -m bench.chaos [--seconds 600] [--kill-every 3] [--seed 1]``.

The suite runs the same thing for 20 seconds (tests/test_chaos.py). This prints the report:
kills per stage, rounds, processes, how many lived two completed rounds, any without a
verdict, zombies, the supervisor's RSS at start and end, each stage's peak RSS.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from simulation.chaos import run_chaos


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos")
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--kill-every", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="procsmith-chaos-"))
    try:
        r = run_chaos(tmp, args.seconds, args.kill_every, args.seed)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"chaos: {r.seconds:g}s, kills {sum(r.kills.values())} {r.kills}")
    print(f"rounds completed {r.rounds}; processes {r.processes}", end="")
    print(f", of which lived two rounds {r.lived_two_rounds}")
    print(f"without a verdict: {len(r.without_verdict)} {r.without_verdict[:20]}")
    print(f"zombie children: {r.zombies}")
    print(
        f"supervisor RSS: {r.supervisor_rss_kb[0]} kB at start, {r.supervisor_rss_kb[1]} kB at end"
    )
    print("peak RSS per stage (kB):", dict(sorted(r.peak_rss_kb.items())))
    return 0 if not r.without_verdict and not r.zombies else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
