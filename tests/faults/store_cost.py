"""What tcpd's store costs (issue 16): two instances side by side, tcp.durable=1 and 0, the same
workloads on each in alternating order (the machine's load shifts too much between the phases of
one `netstack bench` for a 10% difference to show): request/response, bulk out, bulk in,
connections per second.  Run: `.venv/bin/python -m tests.faults.store_cost` (ROUNDS=4)."""
from __future__ import annotations

import os
import statistics
import time

import libsock
from tests.e2e import netns as ns
from tests.e2e import peers
from tests.e2e.conftest import start_stack, stop_stack, wait_for
from tests.faults import scenarios

MiB = 1 << 20


def one_round(st, port: int, data: bytes, out: dict) -> None:
    os.environ["NETSTACK_RUN"] = st.run_dir
    # request/response, one byte each way, on the kernel's echo server
    rr = libsock.create_connection((st.host, 7700))
    samples = []
    for _ in range(500):
        began = time.perf_counter()
        rr.sendall(b"x")
        rr.recv(1)
        samples.append(time.perf_counter() - began)
    rr.close()
    out["rr_p50_us"].append(statistics.median(samples) * 1e6)
    # bulk libsock -> kernel
    receiver = ns.KernelProcess(st.netns, peers.receive_file, st.host, port)
    sock = wait_for(lambda: scenarios._connect(st.host, port), 10, 0.05, "the receiver")
    began = time.perf_counter()
    sock.sendall(data)
    sock.close()
    receiver.result(60)
    out["out_MBps"].append(len(data) / (time.perf_counter() - began) / 1e6)
    # bulk kernel -> libsock
    listener = libsock.create_server(("0.0.0.0", port + 50))
    sender = ns.KernelProcess(st.netns, scenarios._kernel_send_file, st.addr, port + 50, len(data), 0.0)
    conn, _ = listener.accept()
    began, got = time.perf_counter(), 0
    while chunk := conn.recv(MiB):
        got += len(chunk)
    out["in_MBps"].append(got / (time.perf_counter() - began) / 1e6)
    conn.close()
    listener.close()
    sender.result(60)
    # connections per second
    began = time.perf_counter()
    for _ in range(100):
        libsock.create_connection((st.host, 7700)).close()
    out["conn_per_s"].append(100 / (time.perf_counter() - began))


def main() -> None:
    stacks = {}
    try:
        for mode in ("1", "0"):
            stacks[mode] = start_stack(settings=[f"tcp.durable={mode}"])
            ns.KernelProcess(stacks[mode].netns, peers.echo_server, stacks[mode].host, 7700)
        results = {mode: {"rr_p50_us": [], "out_MBps": [], "in_MBps": [], "conn_per_s": []} for mode in stacks}
        data = peers.pattern(32 * MiB)
        for n in range(int(os.environ.get("ROUNDS", "4"))):
            for mode in ("1", "0") if n % 2 else ("0", "1"):
                one_round(stacks[mode], 7800 + n, data, results[mode])
        for mode, figures in results.items():
            print(f"tcp.durable={mode}", {name: (round(statistics.median(values), 1), [round(v, 1) for v in values])
                                          for name, values in figures.items()})
    finally:
        for st in stacks.values():
            stop_stack(st)


if __name__ == "__main__":
    main()
