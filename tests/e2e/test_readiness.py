"""fileno() as a real descriptor: select, poll and epoll, scenario by scenario, with the same
code once on Python's socket (the kernel, over its loopback) and once on libsock (the stack,
over its loopback), then selectors with a pipe in the same selector."""
from __future__ import annotations

import errno
import os
import select
import selectors
import socket as kernel_socket
import time

import pytest

import libsock
from tests.e2e.conftest import running_stack, wait_for

MODULES = {"kernel": kernel_socket, "libsock": libsock}


@pytest.fixture(params=["kernel", "libsock"])
def net(request, shared_stack):
    return MODULES[request.param]


def _pair(net):
    listener = net.create_server(("127.0.0.1", 0))
    client = net.create_connection(listener.getsockname(), timeout=10)
    server, _ = listener.accept()
    return listener, client, server


def _readable(sock, wait=0.0) -> bool:
    return bool(select.select([sock], [], [], wait)[0])


def _writable(sock, wait=0.0) -> bool:
    return bool(select.select([], [sock], [], wait)[1])


def test_idle_socket_waits_its_timeout_then_data_makes_it_readable(net):
    listener, client, server = _pair(net)
    with listener, client, server:
        started = time.monotonic()
        assert not _readable(server, 0.3)
        assert time.monotonic() - started >= 0.29          # select waited: nothing was ready
        assert _writable(server) and _writable(client)
        client.sendall(b"ping")
        assert _readable(server, 5)
        server.setblocking(False)
        assert server.recv(100) == b"ping"
        with pytest.raises(BlockingIOError):
            server.recv(100)
        assert not _readable(server)                       # drained: not readable any more


def test_listener_readable_with_a_pending_connection_only(net):
    with net.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        assert not _readable(listener, 0.1)
        with pytest.raises(BlockingIOError):
            listener.accept()
        client = net.create_connection(listener.getsockname(), timeout=10)
        assert _readable(listener, 5)
        conn, _ = listener.accept()
        assert not _readable(listener)
        conn.close()
        client.close()


def test_eof_is_readable_and_recv_returns_empty(net):
    listener, client, server = _pair(net)
    with listener, server:
        client.close()
        assert _readable(server, 5)
        assert server.recv(100) == b""
        assert _readable(server)                           # EOF stays readable


def test_nonblocking_connect_refused_gives_so_error(net):
    with net.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]                      # a port nobody listens on once closed
    sock = net.socket(net.AF_INET, net.SOCK_STREAM)
    sock.setblocking(False)
    with sock:
        err = sock.connect_ex(("127.0.0.1", port))
        assert err in (errno.EINPROGRESS, errno.ECONNREFUSED)
        if err == errno.EINPROGRESS:
            assert _writable(sock, 5)
            assert sock.getsockopt(net.SOL_SOCKET, net.SO_ERROR) == errno.ECONNREFUSED


def test_nonblocking_connect_becomes_writable_with_no_error(net):
    with net.create_server(("127.0.0.1", 0)) as listener:
        sock = net.socket(net.AF_INET, net.SOCK_STREAM)
        sock.setblocking(False)
        with sock:
            assert sock.connect_ex(listener.getsockname()) in (errno.EINPROGRESS, 0)
            assert _writable(sock, 5)
            assert sock.getsockopt(net.SOL_SOCKET, net.SO_ERROR) == 0
            assert sock.getpeername() == listener.getsockname()


def test_full_send_buffer_is_not_writable_until_the_peer_reads(net):
    listener, client, server = _pair(net)
    with listener, client, server:
        client.setblocking(False)
        block, sent = b"x" * 65536, 0
        for _ in range(200):        # until both buffers are full (the receiver's may still grow)
            while True:
                try:
                    sent += client.send(block)
                except BlockingIOError:
                    break
            if not _writable(client, 0.3):
                break
        assert not _writable(client, 0.2)
        server.settimeout(10)
        received = 0
        while received < sent:
            received += len(server.recv(1 << 20))
        assert _writable(client, 5)


def test_poll_masks(net):
    listener, client, server = _pair(net)
    with listener, client, server:
        poller = select.poll()
        poller.register(server, select.POLLIN | select.POLLOUT)
        assert dict(poller.poll(0)).get(server.fileno(), 0) & (select.POLLIN | select.POLLOUT) == select.POLLOUT
        client.sendall(b"data")
        wait_for(lambda: dict(poller.poll(100)).get(server.fileno(), 0) & select.POLLIN, 5, message="POLLIN")


def test_epoll_edge_triggered_one_edge_per_arrival(net):
    listener, client, server = _pair(net)
    with listener, client, server:
        server.setblocking(False)
        ep = select.epoll()
        ep.register(server.fileno(), select.EPOLLIN | select.EPOLLET)
        assert ep.poll(0.1) == []
        for round_ in range(3):
            client.sendall(b"r%d" % round_)
            events = ep.poll(5)
            assert events and events[0][1] & select.EPOLLIN
            data = b""
            while True:                                    # drain to EAGAIN, as ET asks
                try:
                    data += server.recv(100)
                except BlockingIOError:
                    break
            assert data == b"r%d" % round_
            assert ep.poll(0.05) == []                     # no second edge without new data
        ep.close()


def test_selector_serves_a_socket_and_a_pipe(shared_stack):
    """A libsock listener, its connections and a pipe in one DefaultSelector (epoll)."""
    read_end, write_end = os.pipe()
    sel = selectors.DefaultSelector()
    listener = libsock.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    sel.register(listener, selectors.EVENT_READ, "accept")
    sel.register(read_end, selectors.EVENT_READ, "pipe")
    clients = [libsock.create_connection(listener.getsockname(), timeout=10) for _ in range(3)]
    for i, c in enumerate(clients):
        c.sendall(b"hello %d" % i)
    os.write(write_end, b"from the pipe")
    echoed, piped, deadline = 0, b"", time.monotonic() + 10
    while (echoed < 3 or not piped) and time.monotonic() < deadline:
        for key, _ in sel.select(1):
            if key.data == "accept":
                conn, _ = listener.accept()
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ, "conn")
            elif key.data == "pipe":
                piped += os.read(read_end, 100)
            else:
                data = key.fileobj.recv(100)
                if data:
                    key.fileobj.sendall(data.upper())
                    echoed += 1
    assert piped == b"from the pipe" and echoed == 3
    for i, c in enumerate(clients):
        assert c.recv(100) == b"HELLO %d" % i
        c.close()
    for key in list(sel.get_map().values()):
        if key.data == "conn":
            key.fileobj.close()
    sel.close()
    listener.close()
    os.close(read_end)
    os.close(write_end)


def test_nonblocking_calls_answer_eagain_einprogress_ealready_as_linux(net):
    listener, client, server = _pair(net)
    with listener, client, server:
        with pytest.raises(BlockingIOError) as exc:
            server.recv(10, net.MSG_DONTWAIT)                # a blocking socket, one call non-blocking
        assert exc.value.errno == errno.EAGAIN
        assert server.gettimeout() is None                   # the flag did not stick
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()
    sock = net.socket(net.AF_INET, net.SOCK_STREAM | net.SOCK_NONBLOCK)
    with sock, net.create_server(("127.0.0.1", 0)) as target:
        assert sock.gettimeout() == 0.0
        first = sock.connect_ex(target.getsockname())
        assert first in (errno.EINPROGRESS, 0)
        if first == errno.EINPROGRESS:
            again = sock.connect_ex(target.getsockname())
            assert again in (errno.EALREADY, errno.EISCONN, 0)


def test_a_nonblocking_send_returns_a_partial_count_when_room_runs_out(net):
    listener, client, server = _pair(net)
    with listener, client, server:
        client.setblocking(False)
        big = b"y" * (16 << 20)
        counts = []
        for _ in range(50):
            try:
                counts.append(client.send(big))
            except BlockingIOError:
                break
            if counts[-1] < len(big):
                break
        assert counts and 0 < counts[-1] < len(big)         # what fitted, not all and not an error


def test_a_socket_of_a_dead_tcpd_turns_ready_and_answers_econnreset():
    """Without tcpd's store (tcp.durable=0): a program asleep in select on a libsock socket does
    not wait forever when tcpd dies."""
    with running_stack(settings=["tcp.durable=0"]) as stack:
        listener, client, server = _pair(libsock)
        assert not _readable(server, 0.1)
        stack.cli("kill", "tcpd")
        killed = time.monotonic()
        assert _readable(server, 5)
        assert time.monotonic() - killed < 3.0
        with pytest.raises(ConnectionResetError):
            server.recv(10)
        for sock in (listener, client, server):
            sock.close()


def test_a_selector_asleep_through_a_tcpd_kill_wakes_for_what_comes_after(stack):
    """With the store (issue 16): the socket outlives tcpd, and so does its readiness.  The
    selector may wake once for nothing (a call then finds nothing to read); data sent after
    the new tcpd took over wakes it, and the socket stays quiet otherwise."""
    listener, client, server = _pair(libsock)
    with listener, client, server:
        server.setblocking(False)
        selector = selectors.DefaultSelector()
        selector.register(server, selectors.EVENT_READ)
        assert not selector.select(0.1)
        stack.cli("kill", "tcpd")
        if selector.select(3):                  # the spurious wake the old tcpd's death makes
            with pytest.raises(BlockingIOError):
                server.recv(10)                 # (carried to the new tcpd: nothing there yet)
        assert not selector.select(0.3)         # quiet again: the new tcpd told it the state
        client.sendall(b"after")
        assert selector.select(5)
        assert server.recv(10) == b"after"
        selector.close()


def test_poll_shows_rdhup_at_eof_then_hup_once_both_ways_are_shut(net):
    listener, client, server = _pair(net)
    with listener, client, server:
        poller = select.poll()
        poller.register(server, select.POLLIN | select.POLLOUT | select.POLLRDHUP)

        def mask():
            return dict(poller.poll(100)).get(server.fileno(), 0)

        client.shutdown(net.SHUT_WR)                         # the peer's FIN
        got = wait_for(lambda: mask() & select.POLLRDHUP and mask(), 5, message="POLLRDHUP")
        assert got & (select.POLLIN | select.POLLOUT) == select.POLLIN | select.POLLOUT
        assert not got & select.POLLHUP
        server.shutdown(net.SHUT_WR)                         # now both ways
        got = wait_for(lambda: mask() & select.POLLHUP and mask(), 5, message="POLLHUP")
        assert got & select.POLLIN and got & select.POLLRDHUP
