"""One process of a simulated process tree (see ``simulation.workspace``). Stdlib only.

Run as ``python <name>`` from a directory holding a copy of this file under ``<name>``, so the
process's argv can be ``/proc/self/exe ring1`` or ``supervisor init``. It spawns the children
described by $SIMPROC_SPEC, appends ``label pid`` for each to $SIMPROC_REPORT, and waits; on
SIGTERM it ends its children, reaps them and exits 0.
"""

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

# Variables passed on to children (with their own node's env).
CHILD_ENV_KEEP = ("PATH", "PYTHONSAFEPATH", "SIMPROC_REPORT", "LANG")


def _spawn(node: dict[str, Any]) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k in CHILD_ENV_KEEP}
    env.update(node.get("env") or {})
    if node.get("children"):
        env["SIMPROC_SPEC"] = json.dumps(node["children"])
    if node.get("exec"):
        env["SIMPROC_EXEC"] = json.dumps(node["exec"])
    return subprocess.Popen(
        node["argv"], executable=node.get("executable"), env=env, cwd=os.getcwd()
    )


def main() -> None:
    children: list[subprocess.Popen[bytes]] = []

    def stop(signum: int, frame: object) -> None:
        # The group-wide SIGTERM and our parent's terminate() both arrive: handle one.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for child in children:
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + 5
        for child in children:
            try:
                child.wait(max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    # Reap a child that dies (a penalty killed it) so it does not linger as a zombie.
    signal.signal(signal.SIGCHLD, lambda signum, frame: [c.poll() for c in children])
    then = os.environ.get("SIMPROC_EXEC")
    if then:
        # On SIGUSR1 become another program, keeping the pid (and its starttime).
        target = json.loads(then)
        become = lambda s, f: os.execv(target["path"], target["argv"])  # noqa: E731, S606
        signal.signal(signal.SIGUSR1, become)
    for node in json.loads(os.environ.get("SIMPROC_SPEC", "[]")):
        children.append(_spawn(node))
        with open(os.environ["SIMPROC_REPORT"], "a") as report:
            report.write(f"{node['label']} {children[-1].pid}\n")
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
