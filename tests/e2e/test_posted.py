"""Posted calls: a send within the socket's credit and close() return without
waiting for tcpd, as Linux's return once the data is in the send buffer.  What
was posted must still reach the kernel peer when the program ends right after,
and an error that arrives meanwhile must still reach the next call."""
from __future__ import annotations

import hashlib
import multiprocessing
import os
import subprocess
import sys
import queue
import textwrap
import threading
import time

import pytest

import libsock
from libsock.socket import CREDIT_TTL
from deploy import bench
from deploy import control as ctl
from tests.e2e import netns as ns
from tests.e2e import peers
from tests.e2e.conftest import connect_or_none, wait_for

SIZE = 100_000            # well within the first credit (the send buffer's room after connect)


def _tcpd_count(stack, name: str) -> int:
    return ctl.control(stack.run_dir, "tcpd", "stats").get(name, 0)


def _send_and_close(host: str, port: int, data: bytes) -> None:
    sock = wait_for(lambda: connect_or_none((host, port), timeout=5), 10, 0.05, "the kernel server")
    sock.sendall(data)
    sock.close()


def test_send_and_close_then_os_exit_in_a_multiprocessing_child(shared_stack):
    """multiprocessing's children end with os._exit: no atexit, yet nothing posted is lost."""
    receiver = ns.KernelProcess(shared_stack.netns, peers.receive_file, shared_stack.host, 5201)
    data = peers.pattern(SIZE, seed=3)
    posted, syncs = _tcpd_count(shared_stack, "posted_calls"), _tcpd_count(shared_stack, "posted_syncs")
    child = multiprocessing.get_context("fork").Process(target=_send_and_close,
                                                         args=(shared_stack.host, 5201, data))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert receiver.result(30) == (SIZE, hashlib.sha256(data).hexdigest())     # every byte, then EOF
    assert _tcpd_count(shared_stack, "posted_calls") >= posted + 2     # the send and the close were posted,
    assert _tcpd_count(shared_stack, "posted_syncs") == syncs + 1      # and the exit waited until tcpd had them


def test_a_program_that_exits_without_closing_still_delivers_and_closes(shared_stack):
    """As the kernel closes a process's descriptors at exit: data first, then FIN."""
    receiver = ns.KernelProcess(shared_stack.netns, peers.receive_file, shared_stack.host, 5202)
    program = textwrap.dedent(f"""
        import time, libsock
        from tests.e2e import peers
        for _ in range(200):
            try:
                sock = libsock.create_connection(({shared_stack.host!r}, 5202), timeout=5)
                break
            except ConnectionRefusedError:
                time.sleep(0.05)
        sock.sendall(peers.pattern({SIZE}, seed=4))
        # no close: the exit does it
    """)
    done = subprocess.run([sys.executable, "-c", program], env={**os.environ, "NETSTACK_RUN": shared_stack.run_dir},
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))), timeout=60,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert receiver.result(30) == (SIZE, hashlib.sha256(peers.pattern(SIZE, seed=4)).hexdigest())


def _reset_when_told(host: str, port: int) -> None:
    import socket
    import struct
    with socket.create_server((host, port)) as listener:
        conn, _ = listener.accept()
        conn.sendall(b"!")
        assert conn.recv(1) == b"g"
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()                                      # RST


def test_a_reset_before_a_send_is_that_send_s_error(shared_stack):
    """As on Linux: ECONNRESET, then EPIPE.  The credit of the last answer does not outlive
    CREDIT_TTL, so a send long after the reset asks tcpd instead of posting."""
    server = ns.KernelProcess(shared_stack.netns, _reset_when_told, shared_stack.host, 5203)
    sock = wait_for(lambda: connect_or_none((shared_stack.host, 5203), timeout=5), 10, 0.05, "the kernel server")
    resets = _tcpd_count(shared_stack, "estab_resets")
    with sock:
        assert sock.recv(1) == b"!"                      # its answer carries the credit
        answered = time.monotonic()
        sock.send(b"g")
        server.result(10)
        wait_for(lambda: _tcpd_count(shared_stack, "estab_resets") > resets, 10, 0.02, "tcpd to take the reset")
        time.sleep(max(0.0, answered + CREDIT_TTL - time.monotonic()))     # the scenario: the credit's life ends
        posted = _tcpd_count(shared_stack, "posted_calls")
        with pytest.raises(ConnectionResetError):
            sock.send(b"late")
        with pytest.raises(BrokenPipeError):
            sock.sendall(b"later" * 20_000)
        assert _tcpd_count(shared_stack, "posted_calls") == posted       # nothing was posted into the void


def _receive_each(host: str, port: int, connections: int) -> list[int]:
    """Kernel side: accept `connections` one after another, each read to EOF: their sizes."""
    import socket
    sizes = []
    with socket.create_server((host, port)) as listener:
        listener.settimeout(60)
        for _ in range(connections):
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(60)
                total = 0
                while data := conn.recv(1 << 16):
                    total += len(data)
                sizes.append(total)
    return sizes


def test_a_close_after_another_thread_s_posted_sends_comes_after_them(shared_stack):
    """Calls of two threads take two channels to tcpd, which do not keep each other's order:
    the main thread's close must still come after the bytes a worker thread posted and
    returned from (a new thread's first calls even wait for its channel to connect)."""
    rounds, chunks, chunk = 20, 40, 1000
    receiver = ns.KernelProcess(shared_stack.netns, _receive_each, shared_stack.host, 5205, rounds)
    fences = _tcpd_count(shared_stack, "fence_waits")
    for _ in range(rounds):
        sock = wait_for(lambda: connect_or_none((shared_stack.host, 5205), timeout=5), 10, 0.05, "the server")
        worker = threading.Thread(target=lambda: [sock.send(b"x" * chunk) for _ in range(chunks)])
        worker.start()
        worker.join()
        sock.close()
    assert receiver.result(60) == [chunks * chunk] * rounds
    assert _tcpd_count(shared_stack, "fence_waits") > fences          # the close waited for the worker's sends


def test_a_socket_made_in_one_thread_is_used_at_once_in_another(shared_stack):
    """socket() is posted on the maker's channel, here behind a large posted send: a connect
    from another thread's channel must still find the socket there (libsock fences first;
    the fence's decisions are unit-tested in tests/unit/test_libsock_channels.py)."""
    echo = ns.KernelProcess(shared_stack.netns, peers.echo_server, shared_stack.host, 5206)
    sink = ns.KernelProcess(shared_stack.netns, peers.receive_file, shared_stack.host, 5207)
    wait_for(lambda: connect_or_none((shared_stack.host, 5206), timeout=5), 10, 0.05, "the echo server").close()
    bulk = wait_for(lambda: connect_or_none((shared_stack.host, 5207), timeout=5), 10, 0.05, "the sink")
    jobs, results, warm = queue.Queue(), [], threading.Event()

    def worker():
        libsock.socket().close()                     # this thread's channel is up before the race
        warm.set()
        while (sock := jobs.get()) is not None:
            try:
                sock.connect((shared_stack.host, 5206))
                sock.sendall(b"ping")
                results.append(sock.recv(4))
            except OSError as exc:
                results.append(exc)
            finally:
                sock.close()
    user = threading.Thread(target=worker)
    user.start()
    warm.wait(10)
    for _ in range(20):
        bulk.getsockopt(libsock.SOL_SOCKET, libsock.SO_SNDBUF)       # a fresh word on the room
        assert bulk.send(b"x" * 60_000) == 60_000                     # posted: 60 kB ahead on this channel
        jobs.put(libsock.socket())
    jobs.put(None)
    user.join(30)
    bulk.close()
    assert sink.result(30)[0] == 20 * 60_000
    echo.kill()
    assert results == [b"ping"] * 20


def _hold_until_read(host: str, port: int, out) -> None:
    """Kernel side: connect, say so, then read until EOF (what the dead process's close sends)."""
    import socket
    with bench._connect_retry(socket, host, port) as sock:
        sock.sendall(b"hi")
        out.put(sock.recv(10))


def test_a_killed_program_s_sockets_are_closed_as_at_its_exit(shared_stack):
    """SIGKILL: no exit hook runs, yet its listener's port is free again and its peer sees FIN."""
    program = textwrap.dedent("""
        import sys, libsock
        server = libsock.create_server(("0.0.0.0", 5204))
        conn, _ = server.accept()
        assert conn.recv(2) == b"hi"
        print("holding", flush=True)
        sys.stdin.read()               # until killed
    """)
    child = subprocess.Popen([sys.executable, "-c", program], env={**os.environ, "NETSTACK_RUN": shared_stack.run_dir},
                             cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        out = multiprocessing.get_context("fork").Queue()
        peer = ns.KernelProcess(shared_stack.netns, _hold_until_read, shared_stack.addr, 5204, out)
        assert child.stdout.readline() == "holding\n"
        closed_before = _tcpd_count(shared_stack, "orphans_closed")
        child.kill()
        child.wait(10)
        assert out.get(timeout=10) == b""                # FIN: the peer reads EOF
        peer.result(10)
        assert _tcpd_count(shared_stack, "orphans_closed") == closed_before + 2     # listener and connection
        with libsock.socket() as again:      # SO_REUSEADDR passes the TIME_WAIT, never a live listener
            again.setsockopt(libsock.SOL_SOCKET, libsock.SO_REUSEADDR, 1)
            again.bind(("0.0.0.0", 5204))
            again.listen()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)


def test_threads_that_end_leave_no_channel_behind_and_their_posts_arrive(shared_stack):
    """Each thread has its own channel to tcpd; it goes with the thread, and a close the
    thread posted just before ending still reaches tcpd."""
    import gc
    import threading
    from libsock import _rpc

    receiver = ns.KernelProcess(shared_stack.netns, peers.receive_file, shared_stack.host, 5205)
    data = peers.pattern(SIZE, seed=6)
    sock = wait_for(lambda: connect_or_none((shared_stack.host, 5205), timeout=5), 10, 0.05, "the kernel server")

    def send_and_close():
        sock.sendall(data)           # posted within the credit
        sock.close()                 # posted

    worker = threading.Thread(target=send_and_close)
    worker.start()
    worker.join()
    assert receiver.result(30) == (SIZE, hashlib.sha256(data).hexdigest())     # the close arrived: EOF
    gc.collect()
    before = len(_rpc._channels)
    threads = [threading.Thread(target=lambda: libsock.socket().close()) for _ in range(50)]
    for thread in threads:
        thread.start()
        thread.join()
    gc.collect()
    assert len(_rpc._channels) <= before          # fifty threads came and went, and so did their channels
