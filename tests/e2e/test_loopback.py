"""A program on libsock talks to another on the same stack: to the stack's own address,
127.0.0.1, "localhost", or 0.0.0.0 (which Linux takes for loopback).  ipd loops the
segments back, as Linux's lo does; none of them reaches the device."""
from __future__ import annotations

import hashlib
import threading

import pytest

import libsock
from deploy import control as ctl

PAYLOAD = bytes(range(256)) * 2000      # 512 KiB: several super-segments, windows, ACKs


def _serve(server, connections: int, out: list) -> None:
    """Answer each connection with the sha256 of what it sent until EOF."""
    for _ in range(connections):
        conn, peer = server.accept()
        with conn:
            digest = hashlib.sha256()
            while data := conn.recv(1 << 16):
                digest.update(data)
            conn.sendall(digest.digest())
            out.append((conn.getsockname(), peer))


@pytest.mark.parametrize("host, address", [("stack", "stack"), ("127.0.0.1", "127.0.0.1"),
                                           ("localhost", "127.0.0.1"), ("0.0.0.0", "127.0.0.1")])
def test_a_libsock_client_reaches_a_libsock_server_on_the_same_stack(shared_stack, host, address):
    host = shared_stack.addr if host == "stack" else host
    address = shared_stack.addr if address == "stack" else address
    device_tx = ctl.control(shared_stack.run_dir, "nicd", "stats")["tx_packets"]
    accepted: list = []
    with libsock.create_server(("0.0.0.0", 0)) as server:
        port = server.getsockname()[1]
        serving = threading.Thread(target=_serve, args=(server, 1, accepted))
        serving.start()
        with libsock.create_connection((host, port), timeout=10) as client:
            client.sendall(PAYLOAD)
            client.shutdown(libsock.SHUT_WR)
            assert client.recv(64) == hashlib.sha256(PAYLOAD).digest()
            local = client.getsockname()
            assert client.getpeername() == (address, port) and local[0] == address
        serving.join(10)
    assert accepted == [((address, port), local)]
    assert ctl.control(shared_stack.run_dir, "nicd", "stats")["tx_packets"] == device_tx
    assert ctl.control(shared_stack.run_dir, "ipd", "stats")["loopback_packets"] > 0


def test_socketpair_is_two_connected_sockets_over_loopback(shared_stack):
    """socketpair(AF_INET) gives what CPython gives where AF_UNIX is missing, two TCP sockets
    joined through 127.0.0.1; the default, AF_UNIX, is the kernel's (asyncio's self-pipe)."""
    k1, k2 = libsock.socketpair()
    with k1, k2:
        assert k1.family == libsock.AF_UNIX and not isinstance(k1, libsock.socket)
        k1.sendall(b"local")
        assert k2.recv(10) == b"local"
    a, b = libsock.socketpair(libsock.AF_INET)
    chunk = PAYLOAD[:1 << 16]               # one thread: what a buffers and b's window can hold
    with a, b:
        a.sendall(chunk)
        a.shutdown(libsock.SHUT_WR)
        got = b""
        while data := b.recv(1 << 16):
            got += data
        assert got == chunk
        b.sendall(b"back")
        assert a.recv(10) == b"back"
        assert a.getpeername() == b.getsockname() and a.getsockname()[0] == "127.0.0.1"
