"""limits.sockets_per_process, as RLIMIT_NOFILE: a process that holds that many sockets gets
EMFILE for another (at socket(), or at the first call on it, since libsock names its sockets
without waiting for an answer) and for accept(), whose connection stays queued; a close makes
room again."""
from __future__ import annotations

import errno

import pytest

import libsock
from tests.e2e.conftest import running_stack, wait_for

LIMIT = 6


def test_sockets_per_process():
    with running_stack(settings=[f"limits.sockets_per_process={LIMIT}"]) as stack:
        listener = libsock.create_server(("0.0.0.0", 7700))
        held = [listener]
        while len(held) < LIMIT - 1:
            s = libsock.socket()
            s.bind(("0.0.0.0", 0))
            held.append(s)
        client = libsock.create_connection((stack.addr, 7700), timeout=5)      # the limit's last one
        held.append(client)
        extra = libsock.socket()
        with pytest.raises(OSError) as info:
            extra.bind(("0.0.0.0", 0))
        assert info.value.errno == errno.EMFILE
        extra.close()
        listener.settimeout(5)
        with pytest.raises(OSError) as info:
            listener.accept()
        assert info.value.errno == errno.EMFILE
        held.pop(1).close()                       # room for one: the queued connection is accepted
        conn, _ = listener.accept()
        client.sendall(b"hi")
        assert conn.recv(10) == b"hi"
        assert stack.stats()["tcpd"]["emfile"] >= 2
        conn.close()
        for s in held:
            s.close()


MEM_MAX = 8 << 20
CONNECTIONS = 2000


def _senders(addr: str, port: int, count: int, quiet: float, limit: float) -> dict:
    """Kernel side: `count` connections that send until none can send more for `quiet` seconds
    (the stack's windows closed), at most `limit` seconds."""
    import resource
    import socket
    import time
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)     # (a forked child: the suite's descriptors too)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)      # the kernel's own memory, small
        s.connect((addr, port))
        s.setblocking(False)
        socks.append(s)
    chunk = bytes(16384)
    sent, last_progress, start = 0, time.monotonic(), time.monotonic()
    while time.monotonic() - last_progress < quiet and time.monotonic() - start < limit:
        progress = 0
        for s in socks:
            try:
                progress += s.send(chunk)
            except BlockingIOError:
                pass
        sent += progress
        if progress:
            last_progress = time.monotonic()
        else:
            time.sleep(0.05)
    for s in socks:
        s.close()
    return {"sent": sent, "connections": len(socks), "seconds": time.monotonic() - start}


def _rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_2000_connections_that_never_read_stay_under_mem_max():
    """tcp.mem_max: 2,000 connections whose application never reads while the kernel keeps
    sending; the receive queues stop at the cap (each connection's first window alone, 64 KiB,
    would be 128 MiB), tcpd's memory stays bounded, and a new connection is still served."""
    import resource
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 8192:
        pytest.skip("the descriptor hard limit is too low for 2,000 connections beside the suite's own")
    import threading

    from tests.e2e import netns as ns
    settings = [f"tcp.mem_max={MEM_MAX}", f"limits.sockets_per_process={CONNECTIONS + 100}", "tcp.max_backlog=1024"]
    with running_stack(settings=settings) as stack:
        listener = libsock.create_server(("0.0.0.0", 7710), backlog=1024)
        held, stop = [], threading.Event()

        def accept_all():
            listener.settimeout(0.5)
            while not stop.is_set():
                try:
                    held.append(listener.accept()[0])        # never read
                except (TimeoutError, OSError):
                    pass
        acceptor = threading.Thread(target=accept_all, daemon=True)
        acceptor.start()
        tcpd = stack.status()["tcpd"]["pid"]
        before = _rss_kib(tcpd)
        try:
            result = ns.in_netns(stack.netns, _senders, stack.addr, 7710, CONNECTIONS, 3.0, 120.0, timeout=240)
            wait_for(lambda: len(held) == CONNECTIONS, 30, 0.1, "every connection accepted")
            stats = stack.stats()["tcpd"]
            rss = _rss_kib(tcpd)
            # a new connection is served: an echo through another listener
            echo = libsock.create_server(("0.0.0.0", 7711))
            client = ns.KernelProcess(stack.netns, _echo_client, stack.addr, 7711)
            conn, _ = echo.accept()
            conn.sendall(conn.recv(100))
            assert client.result(30) == b"still here"
            conn.close()
            echo.close()
        finally:
            stop.set()
            acceptor.join(5)
            for c in held:
                c.close()
            listener.close()
    assert result["connections"] == CONNECTIONS and len(held) == CONNECTIONS
    # each connection that held nothing may take one segment past the cap
    assert stats["mem_held"] <= MEM_MAX + CONNECTIONS * 1460, stats["mem_held"]
    assert stats["mem_held"] >= MEM_MAX // 2 and stats["drop_mem_pressure"] > 0, stats
    assert rss - before < 4 * MEM_MAX // 1024 + 100_000, (before, rss, stats["mem_held"])     # KiB
    print(f"2000 connections: kernel sent {result['sent']} B in {result['seconds']:.1f} s; mem_held "
          f"{stats['mem_held']}, drop_mem_pressure {stats['drop_mem_pressure']}, tcpd RSS {before} -> {rss} KiB")


def _echo_client(addr: str, port: int) -> bytes:
    import socket
    with socket.create_connection((addr, port), timeout=20) as s:
        s.sendall(b"still here")
        return s.recv(100)
