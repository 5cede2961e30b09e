"""The process-events connector on this machine's kernel: no mocks of netlink.

Each test spawns its own processes and waits for their events (with a timeout, never a
latency bound). Where the connector is not available the tests say why and skip; the
fallback tests run the probe where it cannot work (another network, user or pid namespace,
an unprivileged user) and check that it says so.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stages.cnproc import NETLINK_CONNECTOR, Event, Exec, Exit, Fork, Lost
from stages.events import raw_record
from stages.execread import ExecProcess, ExecReader
from stages.pins import PinnedExecutables
from stages.procevents import ProcEventSource, Unavailable, subscribe, unavailable_for
from tests import cnbytes

pytestmark = pytest.mark.realproc
ROOT = os.geteuid() == 0
WAIT = 10.0  # seconds to wait for an event that must come


def _subscribed(**kwargs: int) -> ProcEventSource:
    if not ROOT:
        pytest.skip("the connector tests run as root (CAP_NET_ADMIN on older kernels)")
    result = subscribe(**kwargs)
    if isinstance(result, Unavailable):
        pytest.skip(f"process events unavailable here: {result.reason}: {result.detail}")
    return result


@pytest.fixture
def source() -> Iterator[ProcEventSource]:
    with _subscribed() as live:
        yield live


def collect(source: ProcEventSource, done: Callable[[Event], bool]) -> list[Event]:
    """Events read until one satisfies ``done`` (that one included); fails after WAIT s."""
    seen: list[Event] = []
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        source.wait(0.2)
        for event in source.read():
            seen.append(event)
            if done(event):
                return seen
    pytest.fail(f"no awaited event within {WAIT} s ({len(seen)} others)")


def argv0() -> str:
    return f"procsmith-test-{uuid.uuid4().hex[:12]}"


def test_fork_exec_and_exit_of_a_spawned_process_arrive_in_order(source: ProcEventSource) -> None:
    before = time.monotonic_ns()
    child = subprocess.Popen([argv0(), "x"], executable="/bin/true")
    pid = child.pid
    events = collect(source, lambda e: isinstance(e, Exit) and e.pid == pid)
    child.wait()
    after = time.monotonic_ns()
    mine = [e for e in events if pid in (getattr(e, "pid", 0), getattr(e, "child_pid", 0))]
    kinds = [type(e) for e in mine]
    assert kinds == [Fork, Exec, Exit], mine
    fork, exec_, exit_ = mine
    assert isinstance(fork, Fork) and isinstance(exec_, Exec) and isinstance(exit_, Exit)
    assert (fork.parent_tgid, fork.child_pid, fork.child_tgid) == (os.getpid(), pid, pid)
    assert (exec_.pid, exec_.tgid) == (pid, pid)
    assert (exit_.exit_code, exit_.parent_tgid) == (0, os.getpid())
    # timestamps are the kernel's CLOCK_MONOTONIC, the clock time.monotonic_ns reads
    assert before <= fork.ts <= exec_.ts <= exit_.ts <= after


def test_a_process_read_at_its_exec_keeps_its_argv_after_it_exits(
    source: ProcEventSource,
) -> None:
    pins = PinnedExecutables()
    reader = ExecReader("/proc", pins)
    name = argv0()
    child = subprocess.Popen([name, "0.1"], executable="/bin/sleep")
    records: list[ExecProcess] = []

    def read_mine(event: Event) -> bool:
        if isinstance(event, Exec) and event.pid == child.pid:
            record = reader.read(event.pid, event.ts)
            assert record is not None, reader.skipped
            records.append(record)
            return True
        return False

    collect(source, read_mine)
    child.wait()
    (record,) = records
    assert record.cmdline == [name, "0.1"]
    assert (record.pid, record.ppid, record.comm) == (child.pid, os.getpid(), "sleep")
    sleep = os.stat("/bin/sleep")
    assert (record.exe_dev, record.exe_ino) == (sleep.st_dev, sleep.st_ino)
    assert record.exec_ns <= record.read_ns
    # the process is gone; its executable is still readable through the pin
    assert not os.path.exists(f"/proc/{child.pid}/exe")
    assert Path(record.exe_pin).read_bytes() == Path("/bin/sleep").read_bytes()
    # the record becomes a RawProcess for the stages that take one
    raw = raw_record(record)
    assert (raw.pid, raw.cmdline, raw.exe_ino) == (record.pid, record.cmdline, record.exe_ino)
    assert raw.pin == record.exe_pin
    assert pins.release((record.pid, record.starttime))
    assert len(pins) == pins.held_files == 0


def test_a_deleted_executable_can_be_judged_by_another_process(
    source: ProcEventSource, tmp_path: Path
) -> None:
    binary = tmp_path / "vanishing-miner"
    shutil.copy("/bin/sleep", binary)
    pins = PinnedExecutables()
    reader = ExecReader("/proc", pins)
    child = subprocess.Popen([str(binary), "30"])
    try:
        events = collect(source, lambda e: isinstance(e, Exec) and e.pid == child.pid)
        record = reader.read(events[-1].pid if isinstance(events[-1], Exec) else 0)
    finally:
        child.kill()
        child.wait()
    binary.unlink()
    assert record is not None and record.exe_pin
    judged = subprocess.run(["cmp", record.exe_pin, "/bin/sleep"], check=False)
    assert judged.returncode == 0
    pins.close()


def test_a_datagram_from_a_user_port_is_dropped_not_read(source: ProcEventSource) -> None:
    forged_pid = 4_000_000
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR) as forger:
        forger.sendto(cnbytes.exec_(forged_pid), (source.port_id, 0))
    marker = subprocess.Popen([argv0()], executable="/bin/true")
    events = collect(source, lambda e: isinstance(e, Exit) and e.pid == marker.pid)
    marker.wait()
    assert not [e for e in events if getattr(e, "pid", 0) == forged_pid]
    assert source.skipped["not_from_kernel"] == 1


def test_a_full_socket_buffer_is_reported_as_lost_events() -> None:
    """ENOBUFS: the kernel dropped datagrams; the first read after says so, then reads on."""
    with _subscribed(rcvbuf=4096) as small:
        for _ in range(60):
            subprocess.run(["/bin/true"], check=True)
        events = small.read(max_datagrams=10_000)
        assert isinstance(events[0], Lost) and events[0].reason == "enobufs"
        assert small.lost >= 1
        assert any(isinstance(e, Exec) for e in events[1:])
        assert (small.dropped() or 0) > 0
        # the error is cleared: new events read without another loss
        marker = subprocess.Popen([argv0()], executable="/bin/true")
        later = collect(small, lambda e: isinstance(e, Exit) and e.pid == marker.pid)
        marker.wait()
        assert not [e for e in later if isinstance(e, Lost)]


def test_read_takes_at_most_the_datagrams_it_is_allowed(source: ProcEventSource) -> None:
    for _ in range(5):
        subprocess.run(["/bin/true"], check=True)
    time.sleep(0.05)  # not a bound: only lets the kernel queue what it will queue
    before = source.datagrams
    source.read(max_datagrams=2)
    assert source.datagrams - before <= 2


def probe_in(*wrapper: str) -> dict[str, str]:
    """Run the probe under ``wrapper`` (unshare, setpriv) in a fresh interpreter."""
    if not ROOT or shutil.which(wrapper[0]) is None:
        pytest.skip(f"needs root and {wrapper[0]}")
    code = (
        "import json, subprocess, time\n"
        "from stages.procevents import subscribe, Unavailable\n"
        "from stages.cnproc import Exec\n"
        "r = subscribe()\n"
        "if isinstance(r, Unavailable):\n"
        "    print(json.dumps({'reason': r.reason, 'detail': r.detail})); raise SystemExit\n"
        "p = subprocess.Popen(['/bin/true']); p.wait(); seen = False\n"
        "deadline = time.monotonic() + 10\n"
        "while not seen and time.monotonic() < deadline:\n"
        "    r.wait(0.2); seen = any(isinstance(e, Exec) and e.pid == p.pid for e in r.read())\n"
        "print(json.dumps({'reason': 'live', 'detail': 'exec seen' if seen else 'none'}))\n"
    )
    repo = str(Path(__file__).resolve().parent.parent)
    done = subprocess.run(
        [*wrapper, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=repo,
        env={**os.environ, "PYTHONPATH": repo},
        check=False,
    )
    if done.returncode != 0 and "unshare failed" in done.stderr:
        pytest.skip(f"cannot make the namespace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    result: dict[str, str] = json.loads(done.stdout)
    return result


def test_in_a_fresh_network_namespace_the_probe_says_so() -> None:
    result = probe_in("unshare", "--net")
    assert result["reason"] == "not_initial_netns"
    assert "network namespace" in result["detail"]


def test_in_a_user_namespace_the_probe_says_so() -> None:
    assert probe_in("unshare", "--user", "--map-root-user")["reason"] == "not_initial_userns"


def test_in_a_pid_namespace_the_probe_says_so() -> None:
    assert probe_in("unshare", "--pid", "--fork")["reason"] == "not_initial_pidns"


def test_without_cap_net_admin_the_probe_is_live_or_names_the_capability() -> None:
    """Kernels before 6.6 refuse a listener without CAP_NET_ADMIN (EPERM); later ones let
    any user listen. Either way the probe must tell the truth: live means events arrive."""
    result = probe_in(
        "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"
    )
    if result["reason"] == "live":
        assert result["detail"] == "exec seen"
    else:
        assert result["reason"] == "no_cap_net_admin"
        assert "CAP_NET_ADMIN" in result["detail"]


def test_refusals_are_named_by_what_they_mean() -> None:
    assert unavailable_for(OSError(errno.EPERM, ""), "ack").reason == "no_cap_net_admin"
    assert "CAP_NET_ADMIN" in unavailable_for(OSError(errno.EPERM, ""), "ack").detail
    assert unavailable_for(OSError(errno.EPROTONOSUPPORT, ""), "socket").reason == "no_connector"
    assert unavailable_for(OSError(errno.ECONNREFUSED, ""), "x").reason == "not_initial_netns"
    assert unavailable_for(OSError(errno.EIO, ""), "x").reason == "error"
