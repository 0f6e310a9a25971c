"""UDP through udpd against the kernel's UDP in the instance's namespace (Python's socket
module on the kernel's side), over loopback inside the stack, and across a udpd restart."""
from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import libsock
from proto.wire.icmp import parse_icmp
from proto.wire.ipv4 import PROTO_ICMP, parse_ipv4
from proto.wire.pcap import ip_packets
from tests.e2e.conftest import interrupt, start_cli, wait_for
from tests.e2e.netns import KernelProcess
from tests.e2e.peers import pattern as _pattern

HOST = "198.18.0.1"
COUNT = 5_000                     # each way: 10,000 datagrams in all
PROBE = b"probe"                  # (no datagram of the exchange has these bytes)
WINDOW_BYTES = 96 * 1024          # in flight at once, under the kernel's 208 KiB receive buffer


_BLOCKS: dict[int, bytes] = {}


def pattern(size: int, seed: int) -> bytes:
    """peers.pattern, its 64 KiB blocks made once per seed (making one costs milliseconds)."""
    block = _BLOCKS.get(seed & 0xFF)
    if block is None:
        block = _BLOCKS[seed & 0xFF] = _pattern(65536, seed & 0xFF)
    return block[:size]


def sizes(count: int = COUNT) -> list[int]:
    """0..1,472 bytes (one packet at MTU 1500), and every 50th from 1,473 up to 65,507 (fragmented)."""
    large = [1473 + (65507 - 1473) * k // (count // 50 - 1) for k in range(count // 50)]
    return [large[i // 50] if i % 50 == 49 else (i * 37) % 1473 for i in range(count)]


def kernel_echo(port: int) -> int:
    """Echo datagrams back to where they came from until STOP; how many."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        sock.bind((HOST, port))
        sock.settimeout(30)
        count = 0
        while (datagram := sock.recvfrom(65535))[0] != b"STOP":
            sock.sendto(*datagram)
            count += 1
    return count


def exchange(sock, peer, lengths: list[int]) -> int:
    """Send each datagram (the pattern, seeded by its index) and check its echo, a window at a time."""
    checked, i = 0, 0
    while i < len(lengths):
        window, size = [], 0
        while i < len(lengths) and (not window or size + lengths[i] <= WINDOW_BYTES):
            window.append(i)
            size += lengths[i]
            i += 1
        for k in window:
            sock.sendto(k.to_bytes(4, "big") + pattern(lengths[k] - 4, k) if lengths[k] >= 4 else bytes(lengths[k]),
                        peer)
        got = {}
        while sum(map(len, got.values())) < len(window):
            data, source = sock.recvfrom(65535)
            assert source == peer
            if data != PROBE:                  # (the late echo of a probe)
                got.setdefault(len(data), []).append(data)
        for k in window:
            data = got[lengths[k]].pop()
            if lengths[k] >= 4:
                index = int.from_bytes(data[:4], "big")
                assert data == index.to_bytes(4, "big") + pattern(lengths[k] - 4, index)
            checked += 1
    return checked


def test_echo_libsock_to_kernel_sizes_0_to_65507(shared_stack):
    lengths = sizes()
    peer = KernelProcess(shared_stack.netns, kernel_echo, 7001)
    try:
        with libsock.socket(libsock.AF_INET, libsock.SOCK_DGRAM) as sock:
            probes = wait_for(lambda: _answers(sock, (HOST, 7001)), 10, 0, "the kernel's echo server")
            sock.settimeout(10)
            assert exchange(sock, (HOST, 7001), lengths) == len(lengths)
            sock.sendto(b"STOP", (HOST, 7001))
        assert peer.result(30) >= len(lengths) + 1 and probes
    finally:
        peer.kill()


def _answers(sock, peer) -> bool:
    """A probe comes back (the echo of an earlier one may come later: exchange skips it)."""
    sock.settimeout(0.3)
    sock.sendto(PROBE, peer)
    try:
        return sock.recvfrom(10) == (PROBE, peer)
    except TimeoutError:
        return False


def kernel_client(stack_addr: str, port: int, lengths: list[int]) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        sock.settimeout(10)
        return exchange(sock, (stack_addr, port), lengths)


def test_echo_kernel_to_libsock_sizes_0_to_65507(shared_stack):
    lengths = sizes()
    with libsock.socket(libsock.AF_INET, libsock.SOCK_DGRAM) as server:
        server.bind(("0.0.0.0", 7002))
        server.setsockopt(libsock.SOL_SOCKET, libsock.SO_RCVBUF, 1 << 22)
        server.settimeout(30)

        def serve():
            for _ in lengths:
                data, peer = server.recvfrom(65535)
                server.sendto(data, peer)
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        client = KernelProcess(shared_stack.netns, kernel_client, shared_stack.addr, 7002, lengths)
        try:
            assert client.result(120) == len(lengths)
        finally:
            client.kill()
        thread.join(10)
    counters = shared_stack.stats()["udpd"]
    assert counters["in_csum_errors"] == 0 and counters["rcvbuf_errors"] == 0


def kernel_connected_send_twice(stack_addr: str, port: int) -> str:
    """A kernel socket connected to a port nobody holds on the stack: the second send is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((stack_addr, port))
        sock.send(b"anyone?")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                sock.send(b"anyone?")
            except ConnectionRefusedError:
                return "refused"
            time.sleep(0.05)
    return "never refused"


def test_port_unreachable_both_ways_as_econnrefused_and_in_a_capture(shared_stack, tmp_path):
    capture = tmp_path / "unreach.pcap"
    pcap = start_cli(shared_stack, "pcap", str(capture))
    try:
        # the stack refuses: the kernel's connected socket hears our ICMP port unreachable
        assert KernelProcess(shared_stack.netns, kernel_connected_send_twice, shared_stack.addr, 9).result(10) \
            == "refused"
        # the kernel refuses: libsock's connected socket reports it on its next call, as Linux
        with libsock.socket(libsock.AF_INET, libsock.SOCK_DGRAM) as sock:
            sock.connect((HOST, 9))
            sock.send(b"anyone?")
            with pytest.raises(ConnectionRefusedError):
                sock.settimeout(5)
                sock.recv(100)
            sock.send(b"reported once")          # the error went with the call that reported it
    finally:
        interrupt(pcap)
    unreachable = []
    for _, packet in ip_packets(capture.read_bytes()):
        header, payload = parse_ipv4(packet)
        if header.protocol == PROTO_ICMP:
            message = parse_icmp(payload)
            if (message.type, message.code) == (3, 3):
                unreachable.append((".".join(map(str, header.src)), message.body[9]))
    assert (shared_stack.addr, 17) in unreachable and (HOST, 17) in unreachable
    assert shared_stack.stats()["ipd"]["icmp_errors_sent"] >= 1


def test_loopback_inside_the_stack(shared_stack):
    with libsock.socket(libsock.AF_INET, libsock.SOCK_DGRAM) as a, \
            libsock.socket(libsock.AF_INET, libsock.SOCK_DGRAM) as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("0.0.0.0", 0))
        a.settimeout(5)
        b.settimeout(5)
        big = pattern(65507, 3)
        a.sendto(big, ("127.0.0.1", b.getsockname()[1]))
        data, source = b.recvfrom(65535)
        assert data == big and source == a.getsockname()
        b.sendto(b"pong", (shared_stack.addr, a.getsockname()[1]))     # a holds 127.0.0.1 only
        a.sendto(b"ping", (shared_stack.addr, b.getsockname()[1]))
        assert b.recvfrom(10) == (b"ping", ("127.0.0.1", a.getsockname()[1]))
        a.connect(("127.0.0.1", 9))                 # nobody: refused over loopback too
        a.send(b"x")
        with pytest.raises(ConnectionRefusedError):
            a.recv(10)


def test_socket_calls_answer_as_cpythons(shared_stack):
    with libsock.socket(libsock.AF_INET, libsock.SOCK_DGRAM) as sock:
        assert sock.type == libsock.SOCK_DGRAM and sock.getsockname() == ("0.0.0.0", 0)
        with pytest.raises(OSError) as caught:
            sock.send(b"x")
        assert caught.value.errno == errno.EDESTADDRREQ
        with pytest.raises(PermissionError):
            sock.sendto(b"x", ("255.255.255.255", 9))
        sock.setsockopt(libsock.SOL_SOCKET, libsock.SO_BROADCAST, 1)
        sock.sendto(b"x", ("255.255.255.255", 9))
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recvfrom(10)
        sock.setblocking(True)
        with pytest.raises(BlockingIOError):
            sock.recv(10, libsock.MSG_DONTWAIT)
        sock.settimeout(0.2)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            sock.recv(10)
        assert time.monotonic() - started >= 0.2
        with pytest.raises(OSError) as caught:
            sock.sendto(bytes(65508), (HOST, 9))
        assert caught.value.errno == errno.EMSGSIZE
        port = sock.getsockname()[1]
        sock.sendto(b"peeked", ("127.0.0.1", port))
        assert sock.recvfrom(100, libsock.MSG_PEEK) == (b"peeked", ("127.0.0.1", port))
        buffer = bytearray(4)
        assert sock.recvfrom_into(buffer) == (4, ("127.0.0.1", port)) and buffer == b"peek"
        with libsock.socket(libsock.AF_INET, libsock.SOCK_DGRAM) as other:
            with pytest.raises(OSError) as caught:
                other.bind(("0.0.0.0", port))
            assert caught.value.errno == errno.EADDRINUSE
        sock.connect((HOST, 9))
        assert sock.getpeername() == (HOST, 9) and sock.getsockname() == (shared_stack.addr, port)
        sock.connect(libsock.AF_UNSPEC)             # dissolved: the implicit binding goes too, as on Linux
        with pytest.raises(OSError) as caught:
            sock.getpeername()
        assert caught.value.errno == errno.ENOTCONN
        assert sock.getsockname() == ("0.0.0.0", 0)


def test_a_full_receive_buffer_drops_and_counts(shared_stack):
    before = shared_stack.stats()["udpd"]["rcvbuf_errors"]
    with libsock.socket(libsock.AF_INET, libsock.SOCK_DGRAM) as sink, \
            libsock.socket(libsock.AF_INET, libsock.SOCK_DGRAM) as source:
        sink.setsockopt(libsock.SOL_SOCKET, libsock.SO_RCVBUF, 4096)
        assert sink.getsockopt(libsock.SOL_SOCKET, libsock.SO_RCVBUF) == 8192
        sink.bind(("127.0.0.1", 0))
        for _ in range(50):
            source.sendto(bytes(1000), sink.getsockname())
        sink.settimeout(2)
        kept = 0
        sink.recv(2000)
        kept += 1
        sink.settimeout(0.3)
        try:
            while True:
                sink.recv(2000)
                kept += 1
        except TimeoutError:
            pass
        assert 2 <= kept < 50
        assert shared_stack.stats()["udpd"]["rcvbuf_errors"] - before == 50 - kept
        [row] = [r for r in json.loads(shared_stack.cli("ss", "-u", "-a", "--json").stdout)
                 if r["local"] == ["127.0.0.1", sink.getsockname()[1]]]
        assert row["drops"] == 50 - kept and row["state"] == "UNCONN"


def test_udpd_killed_during_a_stream_the_socket_receives_again(stack):
    """UDP promises nothing for datagrams in flight; the bound socket must stay bound and
    receive again within a second of the kill (libsock re-creates it in the new udpd).  A
    socket a selector waits on, with no call made on it, wakes and receives too."""
    import selectors
    record = Path(stack.run_dir) / "incarnations" / "udpd"
    with libsock.socket(libsock.AF_INET, libsock.SOCK_DGRAM) as sock, \
            libsock.socket(libsock.AF_INET, libsock.SOCK_DGRAM) as waiting, selectors.DefaultSelector() as selector:
        waiting.bind(("0.0.0.0", 7005))
        waiting.setblocking(False)
        selector.register(waiting, selectors.EVENT_READ)
        assert not selector.select(0)
        sock.bind(("0.0.0.0", 7003))
        sock.settimeout(10)
        sender = KernelProcess(stack.netns, _stream, stack.addr, 7003)
        try:
            assert sock.recv(10)                         # the stream flows
            old = record.read_text()
            stack.cli("kill", "udpd")
            killed = time.monotonic()
            while True:                                  # until a datagram came through the new udpd
                sock.recv(10)
                if record.read_text() != old:
                    break
            took = time.monotonic() - killed
            assert took < 1.0, took
            assert sock.getsockname() == ("0.0.0.0", 7003)
            assert len(record.read_text().splitlines()) == 2
            second = KernelProcess(stack.netns, _stream, stack.addr, 7005)
            try:      # woken (by libsock, on the new incarnation), it calls: restored, watched again
                received = wait_for(lambda: selector.select(1) and _try_recv(waiting), 10, 0,
                                    "the waiting socket to receive through the new udpd")
                assert len(received) == 4 and waiting.getsockname() == ("0.0.0.0", 7005)
            finally:
                second.kill()
        finally:
            sender.kill()


def _try_recv(sock) -> bytes | None:
    try:
        return sock.recv(100)
    except BlockingIOError:
        return None


def _stream(stack_addr: str, port: int) -> None:
    """A datagram every 5 ms, for up to a minute (the test kills it sooner)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
        for n in range(12_000):
            try:
                out.sendto(n.to_bytes(4, "big"), (stack_addr, port))
            except ConnectionRefusedError:       # (a port unreachable from the gap of the restart)
                pass
            time.sleep(0.005)


def test_a_dead_processs_socket_is_closed_and_its_port_freed(shared_stack):
    program = ("import libsock, os, signal; s = libsock.socket(libsock.AF_INET, libsock.SOCK_DGRAM); "
               "s.bind(('0.0.0.0', 7004)); print('bound', flush=True); os.kill(os.getpid(), signal.SIGKILL)")
    died = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "NETSTACK_RUN": shared_stack.run_dir})
    assert died.stdout == "bound\n" and died.returncode == -9
    with libsock.socket(libsock.AF_INET, libsock.SOCK_DGRAM) as sock:
        def bind() -> bool:
            try:
                sock.bind(("0.0.0.0", 7004))
                return True
            except OSError as exc:
                assert exc.errno == errno.EADDRINUSE
                return False
        wait_for(bind, 3, 0.05, "udpd to close the dead process's socket")


# ---- readiness: fileno() for selectors and asyncio ------------------------------------------------

def _send_datagrams(stack_addr: str, port: int, count: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
        for n in range(count):
            out.sendto(b"d%d" % n, (stack_addr, port))


def test_a_selector_sees_a_udp_socket_readable_only_while_a_datagram_waits(shared_stack):
    """fileno() is a real descriptor: writable always, readable from a datagram's arrival until
    the last queued one is taken, and readable for a pending ICMP error (select's read set has
    POLLERR), which the next call reports."""
    import selectors
    with libsock.socket(libsock.AF_INET, libsock.SOCK_DGRAM) as sock, selectors.DefaultSelector() as selector:
        sock.bind(("0.0.0.0", 7006))
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        read, write = selectors.EVENT_READ, selectors.EVENT_WRITE
        events = lambda: sum(mask for _, mask in selector.select(0))
        readable = selectors.DefaultSelector()          # to wait for readability alone
        readable.register(sock, read)
        assert events() == write
        KernelProcess(shared_stack.netns, _send_datagrams, shared_stack.addr, 7006, 3).result(10)
        assert readable.select(5) and events() == read | write
        got = set()
        while len(got) < 3:                     # all three queued: readable until the last is taken
            assert events() & read, got
            got.add(sock.recv(100))
        assert got == {b"d0", b"d1", b"d2"}
        assert events() == write
        with pytest.raises(BlockingIOError):
            sock.recv(100)
        sock.connect((HOST, 7007))              # nobody holds it: port unreachable comes back
        sock.send(b"anyone?")
        assert readable.select(5) and events() == read | write
        with pytest.raises(ConnectionRefusedError):
            sock.recv(100)
        assert events() == write
        readable.close()
    assert sock.fileno() == -1


ASYNCIO_DATAGRAMS = """
import asyncio, socket, sys
assert socket.__name__ == "libsock"
port, echo_port, closed_port = map(int, sys.argv[1:4])
class Upper(asyncio.DatagramProtocol):
    def __init__(self):
        self.stopped = asyncio.get_running_loop().create_future()
    def connection_made(self, transport):
        self.transport = transport
    def datagram_received(self, data, addr):
        if data == b"STOP":
            self.stopped.set_result(addr)
        else:
            self.transport.sendto(data.upper(), addr)
class Client(asyncio.DatagramProtocol):
    def __init__(self):
        self.got = asyncio.Queue()
    def datagram_received(self, data, addr):
        self.got.put_nowait((data, addr))
    def error_received(self, exc):
        self.got.put_nowait((exc, None))
async def main():
    loop = asyncio.get_running_loop()
    server, upper = await loop.create_datagram_endpoint(Upper, local_addr=("0.0.0.0", port))
    print("listening", flush=True)
    client, to_echo = await loop.create_datagram_endpoint(Client, remote_addr=("198.18.0.1", echo_port))
    for i in range(300):
        client.sendto(b"n%d" % i * (1 + i % 7))
        assert await asyncio.wait_for(to_echo.got.get(), 5) == (b"n%d" % i * (1 + i % 7), ("198.18.0.1", echo_port))
    client.sendto(b"STOP")
    refused, to_nobody = await loop.create_datagram_endpoint(Client, remote_addr=("198.18.0.1", closed_port))
    refused.sendto(b"anyone?")
    error, _ = await asyncio.wait_for(to_nobody.got.get(), 5)
    assert isinstance(error, ConnectionRefusedError), error
    await asyncio.wait_for(upper.stopped, 60)
    print("done", flush=True)
asyncio.run(main())
"""


def _upper_clients(stack_addr: str, port: int, count: int) -> int:
    """Kernel-side: `count` datagrams to the asyncio server, each answered upper-cased."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        for i in range(count):
            message = b"k%d." % i * (1 + i % 11)
            sock.sendto(message, (stack_addr, port))
            assert sock.recvfrom(65535) == (message.upper(), (stack_addr, port)), i
        sock.sendto(b"STOP", (stack_addr, port))
    return count


def test_asyncio_datagram_endpoints_on_libsock(shared_stack, tmp_path):
    """An unchanged asyncio program under `netstack run`: a create_datagram_endpoint server that
    kernel clients use, a client endpoint talking to a kernel echo server, and error_received
    with ConnectionRefusedError for a port nobody holds."""
    from tests.e2e.test_evloop import _program, _start, _stop
    echo = KernelProcess(shared_stack.netns, kernel_echo, 7008)
    program = _start(shared_stack, sys.executable, _program(tmp_path, "datagrams.py", ASYNCIO_DATAGRAMS),
                     "7009", "7008", "7010")
    try:
        assert KernelProcess(shared_stack.netns, _upper_clients, shared_stack.addr, 7009, 300).result(60) == 300
        assert program.stdout.readline().strip() == "done", program.stderr.read()
        assert program.wait(10) == 0
        assert echo.result(10) == 300
    finally:
        _stop(program)
        echo.kill()


def test_a_forked_child_watches_its_copy_of_a_socket_for_itself(shared_stack):
    """fileno() in a child after fork is the child's own descriptor, kept by udpd's answers to
    the child: readable while a datagram waits, not once the child has taken it (the parent's
    descriptor, watched by the parent, would stay readable: the child's recv is not the parent's)."""
    import selectors
    with libsock.socket(libsock.AF_INET, libsock.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        sock.fileno()                            # the parent watches it
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                with selectors.DefaultSelector() as selector, \
                        libsock.socket(libsock.AF_INET, libsock.SOCK_DGRAM) as sender:
                    selector.register(sock, selectors.EVENT_READ)
                    sender.sendto(b"to the child", sock.getsockname())
                    if selector.select(5) and sock.recv(100) == b"to the child" and not selector.select(0.2):
                        status = 0
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
