"""A stage's process, forked from the supervisor (``pipeline.supervisor``).

Children are forked after the heavy modules are imported, so that they share those pages:
before the first fork the supervisor sheds what no child needs, and before each one it
freezes what it holds, so no garbage collector touches what the children inherit. A child
is sent SIGTERM when the supervisor dies, never unwinds back into the supervisor's code, and
exits with its stage's code.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import signal

from pipeline import memory
from pipeline.children import Child
from pipeline.configschema import Config
from pipeline.preflight import Prepared
from pipeline.signals import SignalInbox
from pipeline.stageprocess import run_stage
from pipeline.tap import run_taphub
from pipeline.wiring import TAPHUB
from stages.base import exitcodes
from stages.signatures import engine_library

# The supervisor's: a child that fails before its stage runs is the supervisor's to report.
log = logging.getLogger("procsmith.supervisor")

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15


def shed_before_first_fork(prepared: Prepared | None) -> None:
    """Shed what no child needs before they share this process's pages: garbage (this
    is the last collection of what they inherit), free heap pages, and the signature
    compiler's code (its output, the compiled rules, is what match inherits)."""
    gc.collect()
    if prepared is not None and prepared.signatures is not None:
        memory.release_code(engine_library())
    memory.return_freed_memory()
    memory.trim()


def freeze_for_fork(*, collect: bool) -> None:
    """Freeze what this process holds; with ``collect``, collect garbage first.

    Frozen, the objects made so far are left alone by every garbage collector: the child's
    would write into each page that holds one (copying it into the child), and so would this
    process's (copying it here, the child left its only owner). A frozen cycle is never
    collected, so before a restart's fork the garbage made since the last fork is collected
    first. The first fork's was by ``shed_before_first_fork``; between the forks of one
    start there is next to none, and a collection there writes into pages the children forked
    so far share (the whole pipeline's PSS 114.1-115.7 MiB without it, 116.1-118.0 with it).
    """
    if collect:
        gc.collect()
    gc.freeze()


def fork_stage(
    child: Child, config: Config, prepared: Prepared | None, close_fds: list[int]
) -> int:
    """Fork ``child``'s process and return its pid; the child runs its stage and exits,
    closing ``close_fds`` (the supervisor's) first."""
    freeze_for_fork(collect=child.restarts > 0)
    pid = os.fork()
    if pid:
        return pid
    code = exitcodes.FAILURE
    try:
        code = _child_main(child, config, prepared, close_fds)
    except BaseException:
        log.exception("%s failed", child.label)
    finally:
        logging.shutdown()
        os._exit(code)


def _child_main(
    child: Child, config: Config, prepared: Prepared | None, close_fds: list[int]
) -> int:
    parent = os.getppid()
    # If the supervisor dies (even by SIGKILL), the kernel sends the child SIGTERM.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    # `ps -o comm`, `top` and our own scanner see which stage this is.
    libc.prctl(_PR_SET_NAME, f"ps:{child.label}".encode()[:15])
    if os.getppid() != parent:
        return exitcodes.FAILURE
    for fd in close_fds:
        os.close(fd)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    # Ctrl-C reaches the whole process group; only the supervisor acts on it, and stops
    # the children in order with SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    inbox = SignalInbox((signal.SIGTERM,))
    if child.name == TAPHUB:
        assert prepared is not None  # noqa: S101 - prepare() ran before any fork
        return run_taphub(config, inbox, prepared.security)
    return run_stage(
        child.name,
        config,
        child.index,
        child.count,
        inbox=inbox,
        prepared=prepared,
        restarted=child.restarts > 0,
    )
