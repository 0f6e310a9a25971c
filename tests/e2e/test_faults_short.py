"""Issue 6, briefly (the full size is `make faults`, tests/faults/): kills under load lose
nothing and services are back within a second or two (tcpd's kills: test_tcpd_survives.py); a stopped ipd
resumes; a killed supervisord leaves nothing behind `netstack down`."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from services.procs import pid_alive
from tests.e2e.conftest import netstack, wait_for
from tests.faults import scenarios

MiB = 1 << 20


BACK_WITHIN = 2.0      # make faults holds services to 1 s; here, in CI on a loaded machine, 2 s (the
                       # interpreter's start under supervisord took 1.05 s at load 8)


def _check(rows):
    for row in rows:
        assert row["back_s"] < BACK_WITHIN and row["recovery_s"] < BACK_WITHIN, row
        assert row["bytes_lost"] == 0 and row["connections_reset"] == 0, row


def test_kills_during_transfers_lose_nothing(stack):
    rows = scenarios.transfers_survive_kills(stack, 24 * MiB, pause=(0.02, 0.15))
    assert [row["service"] for row in rows] == list(scenarios.FAULT_SERVICES)
    _check(rows)


def test_kills_during_requests_on_50_connections(stack):
    rows = scenarios.requests_survive_kills(stack, 50)
    assert len(rows) == len(scenarios.FAULT_SERVICES)
    _check(rows)


def test_sigstop_ipd_then_sigcont(stack):
    row, = scenarios.transfers_survive_stop(stack, 24 * MiB, "ipd", seconds=3.0)
    assert row["bytes_lost"] == 0 and row["connections_reset"] == 0


def test_kill_supervisord_then_down_leaves_nothing(stack):
    result = scenarios.supervisord_killed_then_down(stack)
    assert result["left"] == [], result
    assert result["up_again"]


def test_down_with_a_stopped_service_is_prompt(stack):
    stack.cli("kill", "ipd", "--signal", "STOP")
    started = time.monotonic()
    stack.cli("down")
    assert time.monotonic() - started < 2.0
    assert scenarios.leftovers(stack) == []


def test_status_tells_a_suspended_service_and_services_running_unsupervised(stack):
    """Exit 0 only when all four run: a SIGSTOPped service does not; with supervisord killed,
    the four still run (status finds them through their own records), unsupervised."""
    assert netstack("status", "--name", stack.name).returncode == 0
    stack.cli("kill", "tcpd", "--signal", "STOP")
    try:
        stopped = netstack("status", "--name", stack.name, "--json", check=False)
        assert stopped.returncode == 1
        assert {row["service"]: row["state"] for row in json.loads(stopped.stdout)}["tcpd"] == "SUSPENDED"
    finally:
        stack.cli("kill", "tcpd", "--signal", "CONT")
    pid = int((Path(stack.run_dir) / "supervisord.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid), 5, 0.01, "supervisord to die")
    alone = netstack("status", "--name", stack.name, "--json")
    assert "supervisord is gone" in alone.stderr
    rows = json.loads(alone.stdout)
    assert all(row["state"] == "RUNNING" and row["pid"] and not row["supervised"] for row in rows), rows


def test_a_restarted_tcpd_rearms_its_timers_in_the_next_timerd(stack):
    """tcpd hears a timerd announce itself only when that timerd starts: a tcpd that restarted
    must re-arm its timers at the first timerd it hears of, or a TIME_WAIT never ends."""
    from tests.e2e import netns as ns
    from tests.e2e import peers
    from tests.e2e.conftest import connect_or_none

    def incarnation(service):
        return stack.status()[service]["incarnation"]

    def restart(service):
        before = incarnation(service)
        stack.cli("kill", service)
        wait_for(lambda: stack.status()[service]["state"] == "RUNNING" and incarnation(service) != before,
                 10, 0.05, f"a new {service}")

    server = ns.KernelProcess(stack.netns, peers.echo_server, stack.host, 5801)
    try:
        restart("tcpd")
        sock = wait_for(lambda: connect_or_none((stack.host, 5801)), 10, 0.05, "the new tcpd and the server")
        with sock:
            sock.sendall(b"x")
            assert sock.recv(1) == b"x"
            sock.shutdown(1)                           # we close first: TIME_WAIT (2 x 0.5 s) is ours
            assert sock.recv(1) == b""
        wait_for(lambda: any(r["state"] == "TIME_WAIT" for r in stack.ss()), 5, 0.02, "TIME_WAIT")
        restart("timerd")
        wait_for(lambda: not [r for r in stack.ss() if r["state"] != "LISTEN"], 10, 0.05,
                 "TIME_WAIT to end, its timer re-armed in the new timerd")
    finally:
        server.kill()
