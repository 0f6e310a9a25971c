"""Signals landing every 1-3 ms on a program that sends, with handlers that raise and handlers
that call the socket module themselves (issue 19): every message the kernel side receives is
whole and in order (no torn channel, nothing half-sent), the calls that were not interrupted
all completed, nothing hangs, and the socket still works afterwards.  The same code runs on
Python's socket as the reference (the client in the namespace) and on libsock."""
from __future__ import annotations

import multiprocessing
import signal
import socket as std_socket
import struct
import threading
import traceback
import zlib

import pytest

from tests.e2e import netns as ns

FRAME = struct.Struct("!II48sI")          # magic, sequence number, payload, crc32 of the rest
MAGIC = 0x6E657473
PORT = 5620
SIGNALS = 600                              # a second or so of signals (make faults: 10,000)


def frame(seq: int) -> bytes:
    payload = seq.to_bytes(4, "big") * 12
    head = struct.pack("!II48s", MAGIC, seq, payload)
    return head + struct.pack("!I", zlib.crc32(head))


def check_stream(host: str, port: int) -> dict:
    """Kernel side: read frames to EOF; every one whole, sequence numbers increasing; then 'done'."""
    with std_socket.create_server((host, port)) as listener:
        conn, _ = listener.accept()
        with conn:
            data = bytearray()
            while chunk := conn.recv(1 << 16):
                data += chunk
            frames, last, whole, increasing = 0, -1, len(data) % FRAME.size == 0, True
            for offset in range(0, len(data) - len(data) % FRAME.size, FRAME.size):
                magic, seq, payload, crc = FRAME.unpack_from(data, offset)
                whole &= magic == MAGIC and crc == zlib.crc32(data[offset:offset + 56])
                whole &= payload == seq.to_bytes(4, "big") * 12
                increasing &= seq > last
                last, frames = seq, frames + 1
            conn.sendall(b"done")
            return {"frames": frames, "whole": whole, "increasing": increasing, "last": last}


class Interrupted(Exception):
    pass


def stressed_client(module: str, host: str, port: int, signals: int = SIGNALS) -> dict:
    """Sends frames while SIGALRM lands every 1-3 ms and SIGINT (from another thread, as a
    Ctrl-C would) every 5-15 ms, SIGNALS of them together: odd SIGALRMs raise, even ones make a
    call of their own (a getsockname, or a send on the other connection); SIGINTs raise
    KeyboardInterrupt; a second thread makes calls all along."""
    import random
    sm = __import__(module)
    sock = connect_retry(sm, (host, port))
    other = connect_retry(sm, (host, port + 1))
    counts = {"signals": 0, "interrupted": 0, "sent": 0, "handler_calls": 0, "thread_calls": 0,
              "sigint": 0, "keyboard_interrupts": 0, "handler_sent": 0}
    armed = [False]                                    # raise only while the program is in send()
    calling = [False]                                  # a handler's call is under way

    def handler(signum, _frame):
        counts["signals"] += 1
        if counts["signals"] % 2:
            if armed[0]:
                raise Interrupted()
            return
        if calling[0]:
            return          # (one call at a time from handlers: libsock's round trip, a few ms on a
                            # loaded machine, is longer than the signal interval, and handlers nest)
        calling[0] = True
        try:
            if counts["signals"] % 8 == 0:             # a send from within the handler
                other.sendall(b"h")
                counts["handler_sent"] += 1
            else:
                other.getsockname()                    # a call from within the handler
            counts["handler_calls"] += 1
        finally:
            calling[0] = False

    def ctrl_c(signum, _frame):
        counts["signals"] += 1
        counts["sigint"] += 1
        if armed[0]:
            raise KeyboardInterrupt()

    stop = threading.Event()

    def worker():
        while not stop.is_set():
            other.getpeername()
            counts["thread_calls"] += 1

    def interrupter(main: int):
        pick = random.Random(19)
        while not stop.wait(pick.uniform(0.005, 0.015)):
            signal.pthread_kill(main, signal.SIGINT)

    thread = threading.Thread(target=worker)
    previous = signal.signal(signal.SIGALRM, handler)
    previous_int = signal.signal(signal.SIGINT, ctrl_c)
    pokes = threading.Thread(target=interrupter, args=(threading.get_ident(),))
    thread.start()
    pokes.start()
    signal.setitimer(signal.ITIMER_REAL, 0.001, 0.002)
    try:
        seq = 0
        while counts["signals"] < signals:
            seq += 1
            message = frame(seq)
            try:
                armed[0] = True
                sent = sock.send(message)
                armed[0] = False
                if sent != FRAME.size:
                    raise AssertionError("a partial send of a 60-byte message")
                counts["sent"] += 1
            except (Interrupted, KeyboardInterrupt) as exc:
                armed[0] = False
                counts["interrupted"] += 1            # the message went whole or not at all
                if isinstance(exc, KeyboardInterrupt):
                    counts["keyboard_interrupts"] += 1
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)        # first: a handler's call could fail here too
        stop.set()
        pokes.join(30)
        signal.signal(signal.SIGALRM, previous)
        signal.signal(signal.SIGINT, previous_int)
        thread.join(30)
    sock.shutdown(sm.SHUT_WR)
    sock.settimeout(30)
    counts["after"] = sock.recv(10)                      # the socket still works
    sock.close()
    other.close()
    return counts


def connect_retry(sm, address):
    """A connection once the kernel side listens (each listener takes one: no probing)."""
    import time
    deadline = time.monotonic() + 10
    while True:
        try:
            return sm.create_connection(address, timeout=30)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def idle_server(host: str, port: int) -> None:
    """The other connection's peer: takes what the handlers send until EOF."""
    with std_socket.create_server((host, port)) as listener:
        conn, _ = listener.accept()
        with conn:
            while conn.recv(1 << 16):
                pass


def _run_client(queue, module, host, port, netns, signals):
    try:
        if netns:
            ns.enter_netns(netns)
        queue.put(("ok", stressed_client(module, host, port, signals)))
    except BaseException as exc:
        queue.put(("error", traceback.format_exc()))


@pytest.mark.parametrize("module", ["socket", "libsock"])
def test_signals_every_few_milliseconds_tear_nothing(shared_stack, module):
    run_stress(shared_stack, module, SIGNALS)


def run_stress(stack, module: str, signals: int) -> None:
    port = PORT + (10 if module == "libsock" else 0)
    gaps_before = stack.stats()["tcpd"].get("channel_gaps", 0)
    checker = ns.KernelProcess(stack.netns, check_stream, stack.host, port)
    idle = ns.KernelProcess(stack.netns, idle_server, stack.host, port + 1)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    client = ctx.Process(target=_run_client, daemon=True,
                         args=(queue, module, stack.host, port, stack.netns if module == "socket" else None,
                               signals))
    try:
        client.start()
        status, counts = queue.get(timeout=60 + signals / 50)    # nothing hangs
        assert status == "ok", counts
        report = checker.result(30)
    finally:
        client.join(5)
        if client.is_alive():
            client.kill()
        checker.kill()
        idle.kill()
    assert counts["signals"] >= signals and counts["handler_calls"] > 0 and counts["thread_calls"] > 0, counts
    assert counts["keyboard_interrupts"] > 0 and counts["handler_sent"] > 0, counts
    assert report["whole"], report                                   # no torn message, ever
    assert report["increasing"], report                              # and none out of order
    assert counts["sent"] <= report["frames"] <= counts["sent"] + counts["interrupted"], (counts, report)
    assert counts["after"] == b"done"
    # no message of a channel was left unfinished or skipped: tcpd would drop all that followed
    assert stack.stats()["tcpd"].get("channel_gaps", 0) == gaps_before
