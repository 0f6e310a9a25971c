"""Issue 16: SIGKILL tcpd and keep every connection (docs/tcpd-recovery.md).

The applications see a pause: transfers finish intact, blocked calls finish as
if nothing happened, every kind of connection is there afterwards in its state
and keeps working, and the wire carries no reset.  (The long runs are in
tests/faults.)
"""
from __future__ import annotations

import hashlib
import json
import socket as std_socket
import threading
import time
from pathlib import Path

import pytest

import libsock
from deploy import control as ctl
from proto.wire import pcap
from services.procs import pid_alive
from tests.e2e import netns as ns
from tests.e2e import peers
from tests.e2e.conftest import running_stack, wait_for
from tests.faults import scenarios

MiB = 1 << 20
RST = 0x04


def rsts_in(capture: bytes) -> list[str]:
    """The TCP resets in a capture, as 'src:port > dst:port'."""
    found = []
    for _stamp, packet in pcap.ip_packets(capture):
        if packet[9] != 6 or len(packet) < 40:
            continue
        ihl = (packet[0] & 0x0F) * 4
        if packet[ihl + 13] & RST:
            found.append(f"{std_socket.inet_ntoa(packet[12:16])}:{int.from_bytes(packet[ihl:ihl + 2], 'big')} > "
                         f"{std_socket.inet_ntoa(packet[16:20])}:{int.from_bytes(packet[ihl + 2:ihl + 4], 'big')}")
    return found


class Capture:
    """nicd's capture of everything that crosses the device, for the duration of a block."""

    def __init__(self, stack, path):
        self.stack, self.path = stack, str(path)

    def __enter__(self):
        self.id = ctl.control(self.stack.run_dir, "nicd", "pcap_start", path=self.path, count=None,
                              seconds=None)["id"]
        return self

    def __exit__(self, *exc):
        ctl.control(self.stack.run_dir, "nicd", "pcap_stop", id=self.id)

    def rsts(self) -> list[str]:
        with open(self.path, "rb") as f:
            return rsts_in(f.read())


def restart(stack, service: str, signal: str = "KILL") -> float:
    """Kill `service` and wait for its successor to run; the seconds that took."""
    before = stack.status()[service]["incarnation"]
    began = time.monotonic()
    stack.cli("kill", service, "--signal", signal)
    wait_for(lambda: stack.status()[service]["state"] == "RUNNING"
             and stack.status()[service]["incarnation"] != before, 10, 0.02, f"a new {service}")
    return time.monotonic() - began


def test_five_kills_during_transfers_both_ways_lose_nothing_and_reset_nothing(stack, tmp_path):
    with Capture(stack, tmp_path / "kills.pcap") as capture:
        rows = scenarios.transfers_survive_kills(stack, 24 * MiB, services=("tcpd",), rounds=5, pause=(0.05, 0.3))
    assert len(rows) == 5
    for row in rows:                      # transfers_survive_kills checked both sha256 and raised on any error
        assert row["bytes_lost"] == 0 and row["connections_reset"] == 0, row
        assert row["back_s"] < 2.0, row        # (under 1 s on a quiet machine: the note has the figures)
    assert capture.rsts() == []
    stats = stack.stats()["tcpd"]
    assert stats["conns_recovered"] >= 1 and stats["reset_on_recovery"] == 0, stats     # (the last kill's)


def _queue_clients(host: str, port: int, count: int, release) -> int:
    """`count` connections to a libsock listener, each saying hi; held until released."""
    socks = [std_socket.create_connection((host, port), timeout=10) for _ in range(count)]
    for sock in socks:
        sock.sendall(b"hi")
    release.wait(60)
    for sock in socks:
        sock.close()
    return count


def _says_and_leaves(host: str, port: int) -> str:
    """Connect, send some bytes, close: the libsock side is left in CLOSE_WAIT with them unread."""
    with std_socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"unread")
    return "done"


def _reads_later(host: str, port: int, release) -> tuple[int, str]:
    """Accept one connection and read nothing until released (our side's window closes: persist)."""
    with std_socket.socket() as listener:
        listener.setsockopt(std_socket.SOL_SOCKET, std_socket.SO_RCVBUF, 4096)    # (inherited: a small window)
        listener.bind((host, port))
        listener.listen()
        conn, _ = listener.accept()
        with conn:
            release.wait(60)
            digest, total = hashlib.sha256(), 0
            while data := conn.recv(1 << 16):
                digest.update(data)
                total += len(data)
            return total, digest.hexdigest()


def test_every_kind_of_connection_is_there_after_a_kill_and_keeps_working():
    msl = 3.0
    with running_stack(settings=[f"tcp.msl={msl}"]) as stack:
        ctx = __import__("multiprocessing").get_context("fork")
        release = ctx.Event()
        host = stack.host
        echo = ns.KernelProcess(stack.netns, peers.echo_server, host, 7600)
        reader = ns.KernelProcess(stack.netns, _reads_later, host, 7601, release)
        listener = libsock.create_server(("0.0.0.0", 7610), backlog=64)
        half = libsock.create_server(("0.0.0.0", 7611))
        queued = ns.KernelProcess(stack.netns, _queue_clients, stack.addr, 7610, 20, release)
        leaver = ns.KernelProcess(stack.netns, _says_and_leaves, stack.addr, 7611)
        try:
            idle = [wait_for(lambda: scenarios._connect(host, 7600), 10, 0.05, "the echo server") for _ in range(200)]
            closing = [scenarios._connect(host, 7600) for _ in range(50)]
            for sock in closing:
                sock.close()                   # we close first: TIME_WAIT is ours
            assert leaver.result(20) == "done"
            waiter, _ = half.accept()          # its peer said "unread" and left: CLOSE_WAIT
            pusher = wait_for(lambda: scenarios._connect(host, 7601), 10, 0.05, "the slow reader")
            data = peers.pattern(4 * MiB, seed=3)
            pushed = threading.Thread(target=pusher.sendall, args=(data,), daemon=True)
            pushed.start()

            def shape():
                rows = [r for r in stack.ss() if r["state"] != "LISTEN" or r["local"][1] == 7610]
                return {(tuple(r["local"]), tuple(r["remote"])): r for r in rows}

            def ready():
                rows = list(shape().values())
                return (sum(r["state"] == "TIME_WAIT" for r in rows) == 50
                        and any(r["state"] == "LISTEN" and r["recv_q"] == 20 for r in rows)
                        and any(r["state"] == "CLOSE_WAIT" and r["recv_q"] == 6 for r in rows)
                        and any("persist" in r["timers"] for r in rows))
            try:
                wait_for(ready, 20, 0.05, "every kind of connection")
                before = shape()
            except AssertionError:
                raise AssertionError([(r["state"], r["recv_q"], r["timers"]) for r in shape().values()
                                      if r["state"] != "TIME_WAIT"]) from None
            time_wait_since = time.monotonic()

            restart(stack, "tcpd")

            after = shape()
            elapsed = time.monotonic() - time_wait_since
            gone = {key: before[key] for key in before.keys() - after.keys()}
            # only a TIME_WAIT whose time was up may be gone
            assert all(r["state"] == "TIME_WAIT" and r["timers"]["time_wait"] <= elapsed + 0.1
                       for r in gone.values()), gone
            assert after.keys() <= before.keys()
            changed = {key: (before[key]["state"], after[key]["state"]) for key in after
                       if before[key]["state"] != after[key]["state"]
                       or before[key]["recv_q"] != after[key]["recv_q"]}
            assert not changed, changed
            stats = stack.stats()["tcpd"]
            assert stats["conns_recovered"] >= 200 + 50 + 20 + 3 and stats["reset_on_recovery"] == 0, stats

            for n, sock in enumerate(idle):                     # the idle ones work
                sock.sendall(b"ping %d" % n)
                assert sock.recv(64, libsock.MSG_WAITALL) == b"ping %d" % n
            for _ in range(20):                                 # the queued ones are accepted, in order
                conn, _ = listener.accept()
                assert conn.recv(2, libsock.MSG_WAITALL) == b"hi"
                conn.close()
            assert waiter.recv(100) == b"unread" and waiter.recv(100) == b""     # then its FIN
            waiter.close()
            release.set()                                       # the zero window opens
            pushed.join(20)
            assert not pushed.is_alive()
            pusher.close()
            assert reader.result(20) == (len(data), hashlib.sha256(data).hexdigest())
            # TIME_WAIT ended on time: 2 MSL after it began, the restart notwithstanding
            deadline = time_wait_since + 2 * msl + 1.5
            waiting = {k for k, r in before.items() if r["state"] == "TIME_WAIT"}
            wait_for(lambda: not [k for k, r in shape().items() if r["state"] == "TIME_WAIT" and k in waiting]
                     or time.monotonic() > deadline, 2 * msl + 3, 0.05, "TIME_WAIT to end")
            assert time.monotonic() <= deadline, "TIME_WAIT outlived 2 MSL"
            for sock in idle:                                   # and they close normally
                sock.close()
            wait_for(lambda: not [r for r in stack.ss() if r["state"] not in ("LISTEN", "TIME_WAIT")],
                     10, 0.05, "the idle ones to close")
            assert queued.result(20) == 20
        finally:
            release.set()
            for process in (echo, reader, queued, leaver):
                process.kill()


def test_tcpd_and_timerd_killed_together_and_tcpd_killed_during_its_recovery(stack):
    transfers = scenarios.Transfers(stack, 16 * MiB, 7620, seconds=2.5)
    try:
        wait_for(lambda: transfers.progress() > 0, 20, 0.01, "the transfers to start")
        stack.cli("kill", "tcpd")
        stack.cli("kill", "timerd")
        old = stack.status()["tcpd"]
        wait_for(lambda: stack.status()["tcpd"]["state"] == "RUNNING", 10, 0.01, "a new tcpd")
        # at once again: the new one may be in the middle of reading the store back
        pid = stack.status()["tcpd"]["pid"]
        if pid and pid != old.get("pid"):
            stack.cli("kill", "tcpd")
            wait_for(lambda: not pid_alive(pid), 5, 0.01, "that tcpd to die")
        outcome = transfers.finish()
    finally:
        transfers.listener.close()
    assert outcome == {"bytes_lost": 0, "connections_reset": 0}


def test_tcpd_stopped_for_3_s(stack):
    row, = scenarios.transfers_survive_stop(stack, 16 * MiB, "tcpd", seconds=3.0, port=7630)
    assert row["bytes_lost"] == 0 and row["connections_reset"] == 0


def test_blocked_calls_carry_on_through_a_kill(stack):
    result = scenarios.tcpd_kill_keeps_blocked_calls(stack)
    for call, (outcome, seconds) in result["outcomes"].items():
        assert outcome == "returned", (call, outcome)
        assert seconds < 1.5, (call, seconds)
    assert result["kernel"]["kernel server"] == (16 * MiB, hashlib.sha256(b"x" * (16 * MiB)).hexdigest())
    assert result["kernel"]["kernel client"] == "eof"
    assert not result["stuck"], result["stuck"]


@pytest.mark.parametrize("durable", ["0"])
def test_without_the_store_a_kill_resets_promptly(durable):
    with running_stack(settings=[f"tcp.durable={durable}"]) as stack:
        result = scenarios.tcpd_kill_resets_promptly(stack)
    for call, (outcome, seconds) in result["outcomes"].items():
        assert outcome == "ConnectionResetError" and seconds < 1.0, (call, outcome, seconds)
    assert not result["stuck"]


def test_a_socket_in_flight_at_two_crashes_in_a_row_is_reset_alone(stack):
    """A tcpd that dies of a bug appends the sockets it was working on to RUN/tcpd.crashes
    (Tcpd.run); a socket named by the last two crashes within a minute is not recovered, so a
    control block that crashes tcpd cannot crash every tcpd after it: its holder gets
    ECONNRESET, the other connections carry on."""
    echo = ns.KernelProcess(stack.netns, peers.echo_server, stack.host, 7640)
    try:
        bad, good = (wait_for(lambda: scenarios._connect(stack.host, 7640), 10, 0.05, "the echo server")
                     for _ in range(2))
        for sock in (bad, good):
            sock.sendall(b"1")
            assert sock.recv(1) == b"1"
        now = time.time()
        (Path(stack.run_dir) / "tcpd.crashes").write_text(
            json.dumps({"at": now - 5, "sids": [bad._sid[1], 12345]}) + "\n"
            + json.dumps({"at": now, "sids": [bad._sid[1]]}) + "\n")
        restart(stack, "tcpd")
        with pytest.raises(ConnectionResetError):
            bad.sendall(b"2")
            bad.recv(1)
        good.sendall(b"3")
        assert good.recv(1) == b"3"
        assert stack.stats()["tcpd"]["reset_on_recovery"] == 1
        bad.close()
        good.close()
    finally:
        echo.kill()
