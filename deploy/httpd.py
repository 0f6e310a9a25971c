"""A small HTTP/1.1 file server written with libsock: the demo's server and the tests'.

Serves `/` (a page), `/file` (SIZE bytes of a repeatable pattern) and `/bytes/N`.
One thread per connection; connections close after each response.
"""
from __future__ import annotations

import hashlib
import threading

import libsock as socket

PAGE = b"<html><body><h1>Hello from netstack</h1><p>This page crossed a TCP/IP stack written in Python.</p></body></html>\n"


def pattern(size: int) -> bytes:
    block = bytes(range(256)) * 256
    return (block * (size // len(block) + 1))[:size]


class HttpServer:
    def __init__(self, host: str = "0.0.0.0", port: int = 8080, file_size: int = 1 << 20):
        self.listener = socket.create_server((host, port))
        self.file = pattern(file_size)
        self.file_sha256 = hashlib.sha256(self.file).hexdigest()
        self.served = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> "HttpServer":
        self._thread.start()
        return self

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn) -> None:
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                request += chunk
            path = request.split(b" ", 2)[1].decode(errors="replace") if request.count(b" ") >= 2 else "/"
            if path == "/":
                body, kind = PAGE, "text/html"
            elif path == "/file":
                body, kind = self.file, "application/octet-stream"
            elif path.startswith("/bytes/") and path[7:].isdigit():
                body, kind = pattern(int(path[7:])), "application/octet-stream"
            else:
                body, kind = b"not found\n", "text/plain"
            status = "404 Not Found" if body == b"not found\n" else "200 OK"
            head = (f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                    f"Connection: close\r\nServer: netstack-libsock\r\n\r\n").encode()
            conn.sendall(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                conn.sendall(body)
            self.served += 1

    def close(self) -> None:
        self.listener.close()
