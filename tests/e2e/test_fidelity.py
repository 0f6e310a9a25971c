"""libsock's fidelity: the same scenario scripts run with Python's socket against
the kernel and with libsock against the stack must give the same outcomes.

Each scenario takes the socket module, the address of a kernel echo server, a
closed port on it, and the address the client's own stack owns; it returns a
list of outcomes (values or exception names with errno names).
"""
from __future__ import annotations

import errno
import socket as std_socket
import time

import pytest

import libsock
from tests.e2e import netns as ns
from tests.e2e import peers
from tests.e2e.conftest import wait_for

ECHO_PORT, CLOSED_PORT = 7100, 7101


def outcome(fn):
    try:
        value = fn()
        return ("ok", value)
    except OSError as exc:
        if exc.errno is None:
            return (type(exc).__name__,)
        return (type(exc).__name__, errno.errorcode.get(exc.errno, exc.errno))


def sc_refused(sm, server, local):
    s = sm.socket()
    r = [outcome(lambda: s.connect((server[0], CLOSED_PORT)))]
    s.close()
    return r


def sc_connect_twice(sm, server, local):
    with sm.create_connection(server, timeout=5) as s:
        return [outcome(lambda: s.connect(server)), outcome(lambda: s.connect_ex(server))]


def sc_unconnected_calls(sm, server, local):
    s = sm.socket()
    r = [outcome(lambda: s.recv(10)), outcome(lambda: s.send(b"x")), outcome(lambda: s.getpeername()),
         outcome(lambda: s.shutdown(sm.SHUT_WR)), outcome(lambda: s.accept())]
    s.close()
    return r


def sc_send_after_shutdown(sm, server, local):
    with sm.create_connection(server, timeout=5) as s:
        s.shutdown(sm.SHUT_WR)
        return [outcome(lambda: s.send(b"x"))]


def sc_bind_in_use(sm, server, local):
    a, b = sm.socket(), sm.socket()
    a.bind((local, 7200))
    a.listen()
    r = [outcome(lambda: b.bind((local, 7200)))]
    a.close()
    b.close()
    return r


def sc_bind_twice_and_foreign(sm, server, local):
    s = sm.socket()
    r = [outcome(lambda: s.bind((local, 0))), outcome(lambda: s.bind((local, 0)))]
    t = sm.socket()
    r.append(outcome(lambda: t.bind(("203.0.113.9", 0))))
    s.close()
    t.close()
    return r


def sc_nonblocking_accept_and_recv(sm, server, local):
    listener = sm.socket()
    listener.bind((local, 0))
    listener.listen()
    listener.setblocking(False)
    r = [outcome(lambda: listener.accept())]
    listener.close()
    with sm.create_connection(server, timeout=5) as s:
        s.setblocking(False)
        r.append(outcome(lambda: s.recv(10)))
        r.append(outcome(lambda: s.recv(10, sm.MSG_DONTWAIT)))
    return r


def sc_nonblocking_connect(sm, server, local):
    s = sm.socket()
    s.setblocking(False)
    r = [outcome(lambda: s.connect(server))]
    deadline = time.monotonic() + 5
    while s.getsockopt(sm.SOL_SOCKET, sm.SO_ERROR) == 0 and time.monotonic() < deadline:
        if s.connect_ex(server) in (0, errno.EISCONN):
            break
        time.sleep(0.01)
    r.append(outcome(lambda: s.getsockopt(sm.SOL_SOCKET, sm.SO_ERROR)))
    s.setblocking(True)
    s.sendall(b"hello")
    r.append(outcome(lambda: s.recv(5, sm.MSG_WAITALL)))
    s.close()
    return r


def sc_timeout(sm, server, local):
    with sm.create_connection(server, timeout=5) as s:
        s.settimeout(0.2)
        r = [outcome(lambda: s.recv(10)), ("timeout", s.gettimeout())]
        return r


def sc_echo_peek_waitall(sm, server, local):
    with sm.create_connection(server, timeout=5) as s:
        s.sendall(b"abcdef")
        first = s.recv(3, sm.MSG_PEEK | sm.MSG_WAITALL)
        rest = s.recv(6, sm.MSG_WAITALL)
        buf = bytearray(4)
        s.sendall(b"wxyz")
        n = s.recv_into(buf, 4, sm.MSG_WAITALL)
        return [("peek", first[:1]), ("waitall", rest), ("recv_into", n, bytes(buf)),
                ("peer", s.getpeername() == server)]


def sc_closed_socket(sm, server, local):
    s = sm.socket()
    s.close()
    return [outcome(lambda: s.bind((local, 0))), outcome(lambda: s.fileno())]


def sc_makefile_lines(sm, server, local):
    with sm.create_connection(server, timeout=5) as s:
        f = s.makefile("rwb")
        f.write(b"line one\nline two\n")
        f.flush()
        lines = [f.readline(), f.readline()]
        f.close()
        return lines


def sc_sockopts(sm, server, local):
    with sm.create_connection(server, timeout=5) as s:
        s.setsockopt(sm.IPPROTO_TCP, sm.TCP_NODELAY, 1)
        s.setsockopt(sm.SOL_SOCKET, sm.SO_KEEPALIVE, 1)
        s.setsockopt(sm.IPPROTO_TCP, sm.TCP_KEEPIDLE, 30)
        return [s.getsockopt(sm.IPPROTO_TCP, sm.TCP_NODELAY) != 0,
                s.getsockopt(sm.SOL_SOCKET, sm.SO_KEEPALIVE) != 0,
                s.getsockopt(sm.IPPROTO_TCP, sm.TCP_KEEPIDLE),
                s.getsockopt(sm.SOL_SOCKET, sm.SO_TYPE),
                outcome(lambda: s.getsockopt(sm.SOL_SOCKET, 9999))]


def sc_waitall_with_a_timeout_or_non_blocking(sm, server, local):
    """CPython's descriptor is non-blocking when a timeout is set: MSG_WAITALL returns what is there."""
    with sm.create_connection(server, timeout=5) as s:
        s.sendall(b"abc")
        s.recv(3, sm.MSG_PEEK)                   # the echo is here (peeked at, not taken)
        s.settimeout(0.3)
        r = [outcome(lambda: s.recv(10, sm.MSG_WAITALL))]
        s.settimeout(5)
        s.sendall(b"de")
        s.recv(2, sm.MSG_PEEK)
        s.setblocking(False)
        r += [outcome(lambda: s.recv(10, sm.MSG_WAITALL)), outcome(lambda: s.recv(10, sm.MSG_WAITALL))]
        return r


def sc_odd_calls(sm, server, local):
    s = sm.socket()
    r = [outcome(lambda: s.send(b"")),                          # never connected: EPIPE, even for nothing
         outcome(lambda: s.getsockopt(999, 1)), outcome(lambda: s.getsockopt(0, 999)),
         outcome(lambda: s.setsockopt(999, 1, 1))]
    s.close()
    r.append(outcome(lambda: s.connect_ex(server)))             # closed: EBADF's number, not raised
    return r


SCENARIOS = [sc_refused, sc_connect_twice, sc_unconnected_calls, sc_send_after_shutdown, sc_bind_in_use,
             sc_bind_twice_and_foreign, sc_nonblocking_accept_and_recv, sc_nonblocking_connect, sc_timeout,
             sc_echo_peek_waitall, sc_closed_socket, sc_makefile_lines, sc_sockopts,
             sc_waitall_with_a_timeout_or_non_blocking, sc_odd_calls]


def _kernel_run(name, server, local):
    scenario = globals()[name]
    return scenario(std_socket, server, local)


@pytest.fixture(scope="module")
def echo(shared_stack):
    server = ns.KernelProcess(shared_stack.netns, peers.echo_server, shared_stack.host, ECHO_PORT)

    def up():
        try:
            libsock.create_connection((shared_stack.host, ECHO_PORT), timeout=2).close()
            return True
        except OSError:
            return False
    wait_for(up, 10, 0.05, "the kernel echo server")
    yield (shared_stack.host, ECHO_PORT)
    server.kill()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__[3:])
def test_same_outcome_as_kernel(shared_stack, echo, scenario):
    kernel = ns.in_netns(shared_stack.netns, _kernel_run, scenario.__name__, echo, shared_stack.host)
    ours = scenario(libsock, echo, shared_stack.addr)
    assert ours == kernel
