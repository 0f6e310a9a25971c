"""The TCP engine and libsock against the Linux kernel's TCP, both directions."""
from __future__ import annotations

import hashlib
import socket as std_socket
import subprocess
import threading

import pytest

import libsock
from tests.e2e import netns as ns
from tests.e2e import peers
from tests.e2e.conftest import connect_or_none, wait_for

MiB = 1 << 20


def _recv_all(sock, digest=None) -> tuple[int, str]:
    digest = digest or hashlib.sha256()
    total = 0
    while data := sock.recv(1 << 20):
        digest.update(data)
        total += len(data)
    return total, digest.hexdigest()


def test_kernel_client_to_libsock_server_100MiB(shared_stack):
    with libsock.create_server(("0.0.0.0", 5001)) as server:
        sender = ns.KernelProcess(shared_stack.netns, peers.send_file, shared_stack.addr, 5001, 100 * MiB)
        conn, peer = server.accept()
        assert peer[0] == shared_stack.host
        with conn:
            total, digest = _recv_all(conn)
        assert total == 100 * MiB
        assert digest == sender.result(120)


def test_libsock_client_to_kernel_server_100MiB(shared_stack):
    receiver = ns.KernelProcess(shared_stack.netns, peers.receive_file, shared_stack.host, 5002)
    data = peers.pattern(100 * MiB)
    sock = wait_for(lambda: connect_or_none((shared_stack.host, 5002), timeout=5), 10, 0.05, "the kernel server")
    with sock:
        sock.sendall(data)
    assert receiver.result(120) == (100 * MiB, hashlib.sha256(data).hexdigest())


def test_200_concurrent_connections_1MiB_each(shared_stack):
    server = ns.KernelProcess(shared_stack.netns, peers.sink_and_source_server, shared_stack.host, 5003, MiB)
    try:
        wait_for(lambda: _probe(shared_stack.host, 5003), 10, 0.05, "the kernel server")
        results, errors = {}, []
        upload = peers.pattern(MiB, seed=1)
        upload_digest = hashlib.sha256(upload).hexdigest()
        download_digest = hashlib.sha256(peers.pattern(MiB)).hexdigest()

        def one(i):
            try:
                with libsock.create_connection((shared_stack.host, 5003), timeout=120) as sock:
                    sender = threading.Thread(target=sock.sendall, args=(upload,))
                    sender.start()
                    received = b""
                    while len(received) < MiB:
                        chunk = sock.recv(MiB - len(received))
                        assert chunk
                        received += chunk
                    sender.join()
                    sock.shutdown(libsock.SHUT_WR)
                    echo = sock.recv(64, libsock.MSG_WAITALL)
                    results[i] = (hashlib.sha256(received).hexdigest(), echo.decode())
            except Exception as exc:           # reported below with its connection number
                errors.append((i, repr(exc)))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(200)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert not errors, errors[:5]
        assert len(results) == 200
        assert all(r == (download_digest, upload_digest) for r in results.values())
    finally:
        server.kill()


def _probe(host, port):
    sock = connect_or_none((host, port), timeout=5)
    if sock:
        sock.close()
        return True
    return False


def _half_close_peer(host: str, port: int) -> tuple[bytes, int]:
    """Kernel side: accept, read until EOF, then send 300 KiB after our peer shut down writing."""
    with std_socket.create_server((host, port)) as listener:
        listener.settimeout(30)
        conn, _ = listener.accept()
        with conn:
            got = b""
            while data := conn.recv(65536):
                got += data
            conn.sendall(peers.pattern(300 * 1024))
    return got, len(got)


def test_half_close_still_receives(shared_stack):
    peer = ns.KernelProcess(shared_stack.netns, _half_close_peer, shared_stack.host, 5004)
    sock = wait_for(lambda: connect_or_none((shared_stack.host, 5004), timeout=5), 10, 0.05, "the kernel server")
    with sock:
        sock.sendall(b"request")
        sock.shutdown(libsock.SHUT_WR)
        with pytest.raises(BrokenPipeError):
            sock.send(b"more")
        total, digest = _recv_all(sock)
    assert (total, digest) == (300 * 1024, hashlib.sha256(peers.pattern(300 * 1024)).hexdigest())
    assert peer.result(30) == (b"request", 7)


def test_refused_connect(shared_stack):
    with pytest.raises(ConnectionRefusedError):
        libsock.create_connection((shared_stack.host, 5999), timeout=5)


def _reset_peer(host: str, port: int, after: int) -> None:
    """Kernel side: accept, read `after` bytes, then abort with RST (SO_LINGER 0)."""
    import struct
    with std_socket.create_server((host, port)) as listener:
        listener.settimeout(30)
        conn, _ = listener.accept()
        got = 0
        while got < after:
            got += len(conn.recv(65536))
        conn.setsockopt(std_socket.SOL_SOCKET, std_socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()


def test_peer_reset_mid_transfer(shared_stack):
    peer = ns.KernelProcess(shared_stack.netns, _reset_peer, shared_stack.host, 5005, 100_000)
    sock = wait_for(lambda: connect_or_none((shared_stack.host, 5005), timeout=5), 10, 0.05, "the kernel server")
    with sock:
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            for _ in range(2000):
                sock.sendall(b"x" * 65536)
        peer.result(30)
    peer = ns.KernelProcess(shared_stack.netns, _reset_peer, shared_stack.host, 5006, 10)
    sock = wait_for(lambda: connect_or_none((shared_stack.host, 5006), timeout=5), 10, 0.05, "the kernel server")
    with sock:
        sock.sendall(b"0123456789")
        with pytest.raises(ConnectionResetError):
            sock.settimeout(10)
            sock.recv(100)
    peer.result(30)


def test_no_connection_left_behind(shared_stack):
    server = ns.KernelProcess(shared_stack.netns, peers.echo_server, shared_stack.host, 5007)
    try:
        wait_for(lambda: _probe(shared_stack.host, 5007), 10, 0.05, "the echo server")
        for _ in range(10):
            with libsock.create_connection((shared_stack.host, 5007), timeout=10) as sock:
                sock.sendall(b"ping")
                assert sock.recv(4, libsock.MSG_WAITALL) == b"ping"

        def only_time_wait():
            states = [s["state"] for s in shared_stack.ss() if s.get("remote") and s["remote"][1] == 5007]
            return all(state == "TIME_WAIT" for state in states)
        wait_for(only_time_wait, 10, 0.05, "connections to finish closing")
        wait_for(lambda: not [s for s in shared_stack.ss() if s.get("remote") and s["remote"][1] == 5007],
                 10, 0.1, "TIME_WAIT to end (msl 0.5 s)")
    finally:
        server.kill()


def test_curl_downloads_50MiB_from_libsock_server(shared_stack, tmp_path):
    from deploy.httpd import HttpServer
    server = HttpServer(port=8081, file_size=50 * MiB).start()
    try:
        target = tmp_path / "download"
        ns.run(shared_stack.netns, "curl", "-sS", "--max-time", "120", "-o", str(target),
               f"http://{shared_stack.addr}:8081/file", timeout=150)
        assert hashlib.sha256(target.read_bytes()).hexdigest() == server.file_sha256
    finally:
        server.close()


def test_libsock_client_downloads_from_python_http_server(shared_stack, tmp_path):
    (tmp_path / "blob").write_bytes(peers.pattern(3 * MiB))
    server = ns.popen(shared_stack.netns, "python3", "-m", "http.server", "--bind", shared_stack.host,
                      "--directory", str(tmp_path), "8082", stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL)
    try:
        sock = wait_for(lambda: connect_or_none((shared_stack.host, 8082), timeout=5), 10, 0.05, "http.server")
        with sock:
            sock.sendall(b"GET /blob HTTP/1.0\r\nHost: x\r\n\r\n")
            response = sock.makefile("rb").read()
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200")
        assert body == peers.pattern(3 * MiB)
    finally:
        server.terminate()
        server.wait()
