"""A blocking call interrupted by a signal whose handler raises (KeyboardInterrupt, an alarm),
as PEP 475 lets it: the call ends, and what it would have taken stays for the next call, as on
Linux.  (tcpd held the call: libsock withdraws it with a posted "cancel" before the exception
goes on; had tcpd answered already, libsock keeps the answer's data or connection.)"""
from __future__ import annotations

import multiprocessing
import signal
import socket as std_socket

import pytest

import libsock
from tests.e2e import netns as ns
from tests.e2e.conftest import connect_or_none, wait_for


class Interrupted(Exception):
    pass


@pytest.fixture
def alarm():
    """alarm(seconds): SIGALRM then, raising Interrupted in whatever call sleeps."""
    def raise_interrupted(signum, frame):
        raise Interrupted()
    previous = signal.signal(signal.SIGALRM, raise_interrupted)
    try:
        yield lambda seconds: signal.setitimer(signal.ITIMER_REAL, seconds)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def send_when_told(host: str, port: int, go) -> bytes:
    with std_socket.create_server((host, port)) as listener:
        conn, _ = listener.accept()
        with conn:
            go.wait(30)
            conn.sendall(b"hello")
            return conn.recv(100)


def connect_when_told(host: str, port: int, go) -> bytes:
    go.wait(30)
    with std_socket.create_connection((host, port), timeout=10) as conn:
        conn.sendall(b"request")
        return conn.recv(100)


def test_an_interrupted_recv_takes_no_data_with_it(shared_stack, alarm):
    stack = shared_stack
    go = multiprocessing.get_context("fork").Event()
    peer = ns.KernelProcess(stack.netns, send_when_told, stack.host, 5601, go)
    try:
        sock = wait_for(lambda: connect_or_none((stack.host, 5601)), 10, 0.05, "the kernel server")
        with sock:
            alarm(0.2)
            with pytest.raises(Interrupted):
                sock.recv(100)                     # nothing has come: it sleeps in tcpd
            go.set()                               # now the peer sends
            sock.settimeout(10)
            assert sock.recv(100) == b"hello"
            sock.sendall(b"bye")
        assert peer.result(10) == b"bye"
    finally:
        go.set()
        peer.kill()


def test_an_interrupted_accept_leaves_the_connection_to_the_next(shared_stack, alarm):
    stack = shared_stack
    go = multiprocessing.get_context("fork").Event()
    with libsock.create_server(("0.0.0.0", 5602)) as listener:
        peer = ns.KernelProcess(stack.netns, connect_when_told, stack.addr, 5602, go)
        try:
            alarm(0.2)
            with pytest.raises(Interrupted):
                listener.accept()
            go.set()
            listener.settimeout(10)
            conn, (host, _) = listener.accept()
            with conn:
                assert host == stack.host
                conn.sendall(b"reply:" + conn.recv(100))
            assert peer.result(10) == b"reply:request"
        finally:
            go.set()
            peer.kill()


def test_a_call_made_in_a_signal_handler_takes_no_answer_of_the_call_it_interrupted(shared_stack):
    """The handler's own call waits on a channel of its own (issue 19): the answer that arrives
    meanwhile for the interrupted recv (the data the handler asked the peer for) stays with it."""
    stack = shared_stack
    go = multiprocessing.get_context("fork").Event()
    peer = ns.KernelProcess(stack.netns, send_when_told, stack.host, 5603, go)
    other = ns.KernelProcess(stack.netns, send_when_told, stack.host, 5604,
                             multiprocessing.get_context("fork").Event())      # silent
    handled = []

    def handler(signum, frame):
        go.set()                                   # the peer sends now, for the recv below ...
        try:
            quiet.recv(10)                         # ... while this call waits out its timeout
        except TimeoutError:
            handled.append("timed out")
    previous = signal.signal(signal.SIGALRM, handler)
    try:
        sock = wait_for(lambda: connect_or_none((stack.host, 5603)), 10, 0.05, "the kernel server")
        quiet = wait_for(lambda: connect_or_none((stack.host, 5604)), 10, 0.05, "the other server")
        quiet.settimeout(0.5)
        with sock, quiet:
            signal.setitimer(signal.ITIMER_REAL, 0.2)
            sock.settimeout(10)
            assert sock.recv(100) == b"hello"      # the interrupted recv still gets its data
            assert handled == ["timed out"]
            sock.sendall(b"bye")
        assert peer.result(10) == b"bye"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        other.kill()


def test_a_call_tcpd_drops_is_found_and_made_again(shared_stack):
    """The backstop (issue 19): tcpd is told to drop the next call unanswered, as a bug would;
    libsock asks about the call once its timeout and a margin have passed, learns that tcpd
    holds no such call, and makes it again, so the caller gets its answer (and the loss is
    counted on both sides)."""
    from deploy import control as ctl
    from libsock import _rpc

    stack = shared_stack
    go = multiprocessing.get_context("fork").Event()
    peer = ns.KernelProcess(stack.netns, send_when_told, stack.host, 5605, go)
    sock = wait_for(lambda: connect_or_none((stack.host, 5605)), 10, 0.05, "the kernel server")
    with sock:
        go.set()
        wait_for(lambda: libsock_readable(sock), 10, 0.02, "the data")
        lost_before = _rpc.stack().lost_calls
        assert ctl.control(stack.run_dir, "tcpd", "drop_calls", count=1) == {"dropping": 1}
        sock.settimeout(0.5)
        assert sock.recv(100) == b"hello"              # the recv was dropped, found and made again
        assert _rpc.stack().lost_calls == lost_before + 1
        sock.sendall(b"bye")
    assert peer.result(10) == b"bye"
    assert stack.stats()["tcpd"]["calls_dropped_on_purpose"] == 1


def libsock_readable(sock) -> bool:
    import select
    return bool(select.select([sock], [], [], 0)[0])
