"""A fork shares the parent's sockets with the child, as the kernel shares descriptors: a
parent that closes its copy right after the fork (a forking server) leaves the child's open."""
from __future__ import annotations

import os
import socket as std_socket
import socketserver
import threading

import libsock
from tests.e2e import netns as ns
from tests.e2e.conftest import connect_or_none, wait_for


def count_until_eof(host: str, port: int) -> int:
    with std_socket.create_server((host, port)) as listener:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(20)
            total = 0
            while data := conn.recv(65536):
                total += len(data)
            return total


def test_the_child_keeps_the_connection_its_parent_closed_at_once(shared_stack):
    peer = ns.KernelProcess(shared_stack.netns, count_until_eof, shared_stack.host, 5701)
    try:
        sock = wait_for(lambda: connect_or_none((shared_stack.host, 5701)), 10, 0.05, "the kernel peer")
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                sock.sendall(b"z" * 100_000)
                sock.shutdown(libsock.SHUT_WR)     # as socketserver's children end: a call, so what was
                sock.close()                       # posted has reached tcpd before os._exit (which would
                code = 0                           # lose it: README)
            finally:
                os._exit(code)
        sock.close()                                   # the parent's copy, at once
        assert os.waitpid(pid, 0)[1] == 0
        assert peer.result(20) == 100_000              # all of it, then EOF (the child's close)
    finally:
        peer.kill()


def line_client(host: str, port: int) -> list[bytes]:
    with std_socket.create_connection((host, port), timeout=10) as conn:
        stream = conn.makefile("rwb")
        replies = []
        for i in range(3):
            stream.write(b"line %d\n" % i)
            stream.flush()
            replies.append(stream.readline())
        return replies


class Upper(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(line.upper())


def test_forking_tcp_server_serves_from_its_children(shared_stack, monkeypatch):
    monkeypatch.setattr(socketserver, "socket", libsock)
    server = socketserver.ForkingTCPServer(("0.0.0.0", 5702), Upper)
    serving = threading.Thread(target=server.handle_request, daemon=True)    # accept, fork, close
    serving.start()
    try:
        client = ns.KernelProcess(shared_stack.netns, line_client, shared_stack.addr, 5702)
        assert client.result(30) == [b"LINE 0\n", b"LINE 1\n", b"LINE 2\n"]
        serving.join(10)
        assert not serving.is_alive()
    finally:
        server.server_close()
