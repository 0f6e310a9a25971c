"""Fault scenarios: kill a service while traffic runs, and check that nothing is lost.

Used twice: briefly in `make test` (tests/e2e/test_faults_short.py) and at full
size in the fault suite (`make faults`, tests/faults/).  Each scenario returns a
report row per kill: service, signal, recovery seconds (kill to the first packet
through again), bytes lost, connections reset.
"""
from __future__ import annotations

import hashlib
import random
import socket as std_socket
import subprocess
import threading
import time

import libsock
from tests.e2e import netns as ns
from tests.e2e import peers
from tests.e2e.conftest import wait_for

MiB = 1 << 20


def recovery_time(stack, service: str, signal: str = "KILL") -> float:
    """Signal `service`, then measure until it runs a new incarnation and a ping crosses."""
    before = stack.status()[service]["incarnation"]
    killed = time.monotonic()
    stack.cli("kill", service, "--signal", signal)
    wait_for(lambda: (row := stack.status()[service])["state"] == "RUNNING" and row["incarnation"] != before,
             5, 0.01, f"{service} to come back")
    wait_for(lambda: ns.run(stack.netns, "ping", "-n", "-c", "1", "-W", "0.2", stack.addr,
                            check=False).returncode == 0, 5, 0, "a ping through the stack")
    return time.monotonic() - killed


def transfers_survive_kills(stack, size: int, services=("nicd", "ipd", "timerd"), rounds: int = 1,
                            seed: int = 1) -> list[dict]:
    """A transfer each way between the kernel and libsock while services are killed at random moments."""
    rng = random.Random(seed)
    port_in, port_out = 7400 + seed * 2, 7401 + seed * 2
    listener = libsock.create_server(("0.0.0.0", port_in))
    inbound = {}

    def receive():
        conn, _ = listener.accept()
        with conn:
            digest, total = hashlib.sha256(), 0
            while data := conn.recv(MiB):
                digest.update(data)
                total += len(data)
            inbound["result"] = (total, digest.hexdigest())

    receiver = threading.Thread(target=receive)
    receiver.start()
    kernel_sender = ns.KernelProcess(stack.netns, peers.send_file, stack.addr, port_in, size)
    kernel_receiver = ns.KernelProcess(stack.netns, peers.receive_file, stack.host, port_out)
    data = peers.pattern(size)
    outbound = {}

    def send():
        sock = wait_for(lambda: _connect(stack.host, port_out), 10, 0.05, "the kernel receiver")
        with sock:
            sock.sendall(data)
        outbound["sent"] = True

    sender = threading.Thread(target=send)
    sender.start()
    report = []
    try:
        for _ in range(rounds):
            for service in services:
                time.sleep(rng.uniform(0.05, 0.4))
                report.append({"service": service, "signal": "KILL", "recovery_s": recovery_time(stack, service)})
        sender.join(600)
        receiver.join(600)
        sent_digest = kernel_sender.result(600)
        got_out = kernel_receiver.result(600)
    finally:
        listener.close()
    want = hashlib.sha256(data).hexdigest()
    lost_in = size - inbound["result"][0] if inbound.get("result") else size
    lost_out = size - got_out[0]
    assert inbound["result"] == (size, sent_digest), "kernel -> libsock transfer damaged"
    assert got_out == (size, want), "libsock -> kernel transfer damaged"
    for row in report:
        row.update(bytes_lost=lost_in + lost_out, connections_reset=0)
    return report


def _connect(host, port):
    try:
        return libsock.create_connection((host, port), timeout=30)
    except ConnectionRefusedError:
        return None


def tcpd_kill_resets_promptly(stack) -> dict:
    """SIGKILL tcpd under blocked calls: each ends with ConnectionResetError within 1 s."""
    port = 7450
    server = ns.KernelProcess(stack.netns, peers.echo_server, stack.host, port)
    try:
        sock = wait_for(lambda: _connect(stack.host, port), 10, 0.05, "the echo server")
        sock.sendall(b"hello")
        assert sock.recv(5, libsock.MSG_WAITALL) == b"hello"
        listener = libsock.create_server(("0.0.0.0", port + 1))
        outcomes = {}

        def blocked(name, fn):
            try:
                fn()
                outcomes[name] = ("returned", time.monotonic())
            except OSError as exc:
                outcomes[name] = (type(exc).__name__, time.monotonic())

        threads = [threading.Thread(target=blocked, args=("recv", lambda: sock.recv(100))),
                   threading.Thread(target=blocked, args=("accept", lambda: listener.accept()))]
        for t in threads:
            t.start()
        wait_for(lambda: stack.stats()["tcpd"].get("parked_calls", 0) >= 2, 5, 0.02, "both calls to block")
        killed = time.monotonic()
        stack.cli("kill", "tcpd")
        for t in threads:
            t.join(5)
        recovered = wait_for(lambda: _connect(stack.host, port), 5, 0.02, "a new connection")
        new_connection_s = time.monotonic() - killed
        recovered.sendall(b"again")
        assert recovered.recv(5, libsock.MSG_WAITALL) == b"again"
        recovered.close()
        listener.close()
        sock.close()
        return {"outcomes": {k: (v[0], round(v[1] - killed, 3)) for k, v in outcomes.items()},
                "new_connection_s": new_connection_s}
    finally:
        server.kill()
