"""Kernel-side programs the e2e tests run inside an instance's namespace
(Python's own socket module: the reference peer)."""
from __future__ import annotations

import hashlib
import socket
import threading


def pattern(size: int, seed: int = 0) -> bytes:
    block = bytes((i * 7 + seed) & 0xFF for i in range(65536))
    return (block * (size // len(block) + 1))[:size]


def echo_server(host: str, port: int, ready=None) -> None:
    """Echo every byte back until the client closes; one thread per connection; runs forever."""
    listener = socket.create_server((host, port), backlog=256)
    if ready is not None:
        ready.set()

    def serve(conn):
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def send_file(host: str, port: int, size: int) -> str:
    """Connect, send `size` bytes of the pattern, close; the sha256 sent."""
    data = pattern(size)
    with socket.create_connection((host, port), timeout=120) as sock:
        sock.sendall(data)
    return hashlib.sha256(data).hexdigest()


def receive_file(host: str, port: int) -> tuple[int, str]:
    """Listen once, receive until EOF: (bytes, sha256)."""
    with socket.create_server((host, port)) as listener:
        listener.settimeout(60)
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(120)
            digest, total = hashlib.sha256(), 0
            while data := conn.recv(1 << 20):
                digest.update(data)
                total += len(data)
    return total, digest.hexdigest()


def sink_and_source_server(host: str, port: int, size: int, ready=None) -> None:
    """For each connection: send `size` bytes, receive until EOF, answer the sha256 of what came; forever."""
    listener = socket.create_server((host, port), backlog=256)
    if ready is not None:
        ready.set()
    data = pattern(size)

    def serve(conn):
        with conn:
            conn.sendall(data)
            digest = hashlib.sha256()
            while chunk := conn.recv(1 << 16):
                digest.update(chunk)
            conn.sendall(digest.hexdigest().encode())

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
