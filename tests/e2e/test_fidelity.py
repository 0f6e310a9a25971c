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
from tests.e2e.conftest import connect_or_none, wait_for

ECHO_PORT, CLOSED_PORT = 7100, 7101


def outcome(fn):
    try:
        value = fn()
        return ("ok", value)
    except OSError as exc:
        if exc.errno is None:
            return (type(exc).__name__,)
        return (type(exc).__name__, errno.errorcode.get(exc.errno, exc.errno))


def raised(fn):
    """What a call that must fail raised, errno aside: its type and message."""
    try:
        fn()
    except Exception as exc:
        return (type(exc).__name__, str(exc))
    return ("ok",)


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
    r = [outcome(lambda: s.bind((local, 0))), outcome(lambda: s.fileno())]
    c = sm.create_connection(server, timeout=5)
    c.close()                                        # nothing to send is no excuse (issue 19)
    return r + [outcome(lambda: c.sendall(b"")), outcome(lambda: c.send(b"")), outcome(lambda: c.sendall(b"x"))]


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


def sc_the_rest_of_the_module(sm, server, local):
    """Names programs and the standard library's servers use beside the calls."""
    s = sm.socket()
    r = [sm.gethostbyname("127.1"), sm.inet_ntop(sm.AF_INET, sm.inet_pton(sm.AF_INET, "198.18.0.1")),
         isinstance(s, sm.SocketType), sm.getservbyname("http", "tcp"), s.get_inheritable(),
         raised(lambda: s.connect((server[0], 70000)))]
    s.close()
    r += [outcome(lambda: s.settimeout(1)), outcome(lambda: s.setblocking(True))]
    nonblocking = sm.socket(sm.AF_INET, sm.SOCK_STREAM | sm.SOCK_NONBLOCK)
    r += [nonblocking.gettimeout(), nonblocking.type == sm.SOCK_STREAM]
    nonblocking.close()
    return r


def sc_recvfrom_sendto_sendfile(sm, server, local):
    import io
    content = bytes(range(256)) * 400
    with sm.create_connection(server, timeout=5) as s:
        r = [outcome(lambda: s.sendto(b"abc", server)), outcome(lambda: s.recvfrom(10))]
        file = io.BytesIO(content)              # no descriptor: CPython sends it with send()
        r += [outcome(lambda: s.sendfile(file, 10, 50000)), file.tell()]
        got = b""
        while len(got) < 50000:
            got += s.recv(65536)
        r.append(got == content[10:50010])
    return r


def sc_connect_again_after_its_timeout(sm, server, local):
    """The handshake goes on after connect() timed out: a second connect says so at once."""
    s = sm.socket()
    s.settimeout(0.3)
    r = [outcome(lambda: s.connect(("198.18.0.99", 80))),      # nobody there: no answer at all
         outcome(lambda: s.connect(("198.18.0.99", 80))), outcome(lambda: s.connect_ex(("198.18.0.99", 80)))]
    s.close()
    return r


def sc_connect_again_after_a_refusal(sm, server, local):
    """The engine's SS_* state decides (libsock keeps what it is told): a blocking socket's
    next connect starts anew; with a timeout, Linux's socket stays SS_CONNECTING after the
    refusal, so the next connect reports ECONNABORTED, and the one after starts anew."""
    r = []
    for wait in (None, 2.0):
        s = sm.socket()
        s.settimeout(wait)
        r += [outcome(lambda: s.connect((server[0], CLOSED_PORT))) for _ in range(3)]
        r.append(outcome(lambda: s.connect(server)))
        s.close()
    return r


SCENARIOS = [sc_refused, sc_connect_twice, sc_unconnected_calls, sc_send_after_shutdown, sc_bind_in_use,
             sc_bind_twice_and_foreign, sc_nonblocking_accept_and_recv, sc_nonblocking_connect, sc_timeout,
             sc_echo_peek_waitall, sc_closed_socket, sc_makefile_lines, sc_sockopts,
             sc_waitall_with_a_timeout_or_non_blocking, sc_odd_calls, sc_the_rest_of_the_module,
             sc_recvfrom_sendto_sendfile, sc_connect_again_after_its_timeout, sc_connect_again_after_a_refusal]


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


def slow_reader(host: str, port: int) -> int:
    """Read 64 KiB every 0.3 s for 10 s at most: a peer that keeps each send waiting, not stalled."""
    with std_socket.create_server((host, port)) as listener:
        conn, _ = listener.accept()
        with conn:
            total, end = 0, time.monotonic() + 10
            while time.monotonic() < end and (data := conn.recv(65536)):
                total += len(data)
                time.sleep(0.3)            # the reader's pace, not synchronisation
            return total


def test_sendall_timeout_bounds_the_whole_call_as_in_cpython(shared_stack):
    """CPython (3.5+): sendall's timeout is the total; each send within it making progress
    must not extend it (before, each send had the whole timeout: 8-10 s here)."""
    peer = ns.KernelProcess(shared_stack.netns, slow_reader, shared_stack.host, 7102)
    try:
        sock = wait_for(lambda: connect_or_none((shared_stack.host, 7102)), 10, 0.05, "the slow reader")
        with sock:
            sock.settimeout(1.0)
            start = time.monotonic()
            with pytest.raises(TimeoutError):
                sock.sendall(bytes(20 << 20))
            assert time.monotonic() - start < 4.0
    finally:
        peer.kill()

