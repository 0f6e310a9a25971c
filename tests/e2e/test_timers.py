"""The seven timers on the wire against the kernel's TCP (issue 5, Show 3 to 6), with the
short settings of conftest.FAST (msl 0.5 s, FIN_WAIT_2 2 s, RTO 0.2 s minimum).

The seed's worked example (Show 1: one-byte window, '@' lost, RETRANSMISSION
fires, '@' resent, DELAYED ACK fires and ACKs, RETRANSMISSION off) is
tests/unit/tcp/test_two_engines.py::test_seed_worked_example_one_byte_window,
two engines through a fake link, every step asserted.
"""
from __future__ import annotations

import errno
import hashlib
import multiprocessing
import os
import signal
import socket as std_socket
import struct
import subprocess
import threading
import time

import pytest

import libsock
from tests.e2e import netns as ns
from tests.e2e import peers
from tests.e2e.conftest import NETSTACK, connect_or_none, start_stack, stop_stack, wait_for

MiB = 1 << 20


# ------------------------------------------------------------------ helpers
class Capture:
    """`netstack pcap FILE` running until stopped; `segments()` parses what it wrote."""

    def __init__(self, stack, path):
        self.path = str(path)
        self.proc = subprocess.Popen([NETSTACK, "pcap", self.path, "--name", stack.name],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = self.proc.stderr.readline()      # said once it is capturing
        assert self.proc.poll() is None, f"netstack pcap ended at once: {first}{self.proc.stderr.read()}"

    def stop(self) -> list[dict]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        self.proc.communicate(timeout=10)
        return read_pcap(self.path)


def read_pcap(path) -> list[dict]:
    """TCP segments of a LINKTYPE_RAW pcap: time, src, dst, ports, seq, ack, flags, window, len."""
    data = open(path, "rb").read()
    assert struct.unpack("<I", data[:4])[0] == 0xA1B2C3D4
    pos, out = 24, []
    while pos + 16 <= len(data):
        sec, usec, incl, _ = struct.unpack("<IIII", data[pos:pos + 16])
        pkt = data[pos + 16:pos + 16 + incl]
        pos += 16 + incl
        if len(pkt) < 20 or pkt[0] >> 4 != 4 or pkt[9] != 6:
            continue
        ihl = (pkt[0] & 15) * 4
        total = struct.unpack("!H", pkt[2:4])[0]
        tcp = pkt[ihl:]
        sport, dport, seq, ack, off, flags, window = struct.unpack("!HHIIBBH", tcp[:16])
        out.append({"time": sec + usec / 1e6, "src": std_socket.inet_ntoa(pkt[12:16]),
                    "dst": std_socket.inet_ntoa(pkt[16:20]), "sport": sport, "dport": dport, "seq": seq,
                    "ack": ack, "flags": flags, "window": window, "len": total - ihl - (off >> 4) * 4})
    return out


def conns(stack, port: int, side: str = "local") -> list[dict]:
    return [row for row in stack.ss() if row[side][1] == port and row["state"] != "LISTEN"]


def kernel_counter(stack, name: str) -> int:
    out = ns.run(stack.netns, "nstat", "-az", name).stdout
    return int(next(line.split()[1] for line in out.splitlines() if line.startswith(name)))


def ipt(stack, *rule: str) -> None:
    ns.run(stack.netns, "iptables", *rule)


def ipt_packets(stack, chain: str, rule_number: int = 1) -> int:
    out = ns.run(stack.netns, "iptables", "-L", chain, "-v", "-x", "-n", "--line-numbers").stdout
    for line in out.splitlines():
        fields = line.split()
        if fields and fields[0] == str(rule_number):
            return int(fields[1])
    raise AssertionError(f"no rule {rule_number} in {chain}:\n{out}")


def stalled_reader(host: str, port: int, resume, rcvbuf: int) -> tuple[int, str]:
    """Kernel side: accept one connection with a small receive buffer, read nothing until
    `resume` is set, then read to EOF: (bytes, sha256)."""
    listener = std_socket.socket()
    listener.setsockopt(std_socket.SOL_SOCKET, std_socket.SO_RCVBUF, rcvbuf)
    listener.bind((host, port))
    listener.listen(1)
    listener.settimeout(30)
    conn, _ = listener.accept()
    with conn, listener:
        assert resume.wait(60)
        conn.settimeout(60)
        digest, total = hashlib.sha256(), 0
        while data := conn.recv(65536):
            digest.update(data)
            total += len(data)
    return total, digest.hexdigest()


def holder(host: str, port: int, release) -> bytes:
    """Kernel side: accept one connection, keep it open (never close) until `release` is set."""
    with std_socket.create_server((host, port)) as listener:
        listener.settimeout(30)
        conn, _ = listener.accept()
        with conn:
            got = conn.recv(100)
            release.wait(60)
    return got


# ------------------------------------------------------------------ 3. zero window, persist
def test_libsock_reader_stops_kernel_sender_stalls_and_probes(stack, tmp_path):
    """Our receive buffer fills, we advertise a zero window, the kernel stalls and sends
    window probes; reading resumes, our first window update is dropped, and the kernel's
    next probe finds the open window: the transfer completes byte-identical."""
    size = 1 * MiB
    capture = Capture(stack, tmp_path / "zw-in.pcap")
    with libsock.socket() as server:
        server.setsockopt(libsock.SOL_SOCKET, libsock.SO_RCVBUF, 16384)
        server.bind(("0.0.0.0", 5401))
        server.listen(1)
        sender = ns.KernelProcess(stack.netns, peers.send_file, stack.addr, 5401, size)
        server.settimeout(10)
        conn, _ = server.accept()
        with conn:
            row = wait_for(lambda: [r for r in conns(stack, 5401) if r["rcv_wnd"] == 0], 10, 0.05,
                           "our zero window")[0]
            assert row["recv_q"] > 0
            wait_for(lambda: kernel_counter(stack, "TcpExtTCPWinProbe") >= 2, 10, 0.1, "kernel window probes")
            assert conns(stack, 5401)[0]["recv_q"] == row["recv_q"]        # the kernel sent nothing new
            # drop our window updates (pure ACKs, with or without timestamps, with a nonzero window) while we read
            ipt(stack, "-I", "INPUT", "1", "-i", "tun0", "-p", "tcp", "-s", stack.addr, "--tcp-flags", "ALL",
                "ACK", "-m", "length", "--length", "40:52", "-m", "u32", "--u32", "0>>22&0x3C@12&0xFFFF=1:0xFFFF",
                "-j", "DROP")
            conn.settimeout(30)
            digest, total = hashlib.sha256(), 0
            while total < 16384:
                data = conn.recv(16384 - total)
                digest.update(data)
                total += len(data)
            wait_for(lambda: ipt_packets(stack, "INPUT") >= 1, 5, 0.05, "our window update to be dropped")
            ipt(stack, "-D", "INPUT", "1")
            start = time.monotonic()
            while data := conn.recv(1 << 20):
                digest.update(data)
                total += len(data)
            resumed = time.monotonic() - start
    assert total == size and digest.hexdigest() == sender.result(30)
    assert resumed < 20
    segments = capture.stop()
    acked = [s["ack"] for s in segments if s["src"] == stack.addr and s["sport"] == 5401]
    probes = [s for s in segments if s["src"] == stack.host and s["dport"] == 5401 and s["len"] == 0
              and s["flags"] == 0x10 and ((s["seq"] + 1) & 0xFFFFFFFF) in acked]
    assert len(probes) >= 2, "no window probes from the kernel in the capture"


def test_kernel_reader_stops_our_sender_probes(stack, tmp_path):
    """The kernel's reader stops: it advertises a zero window, our persist timer probes with
    backoff; it reads again, its window update is dropped (nicd drops everything coming in
    for a moment), and our next probe finds the window open: the transfer completes."""
    size = 1 * MiB
    resume = multiprocessing.get_context("fork").Event()
    capture = Capture(stack, tmp_path / "zw-out.pcap")
    reader = ns.KernelProcess(stack.netns, stalled_reader, stack.host, 5402, resume, 4096)
    sock = wait_for(lambda: connect_or_none((stack.host, 5402), timeout=5, retry_on=(ConnectionRefusedError, TimeoutError)), 10, 0.05, "the kernel server")
    data = peers.pattern(size, seed=9)
    errors = []

    def send():
        try:
            sock.sendall(data)
            sock.close()
        except Exception as exc:           # handed to the test below
            errors.append(exc)

    sock.settimeout(60)
    sender = threading.Thread(target=send)
    sender.start()
    try:
        wait_for(lambda: [r for r in conns(stack, 5402, "remote") if r["snd_wnd"] == 0 and "persist" in r["timers"]],
                 10, 0.05, "a zero window and our persist timer")
        wait_for(lambda: stack.stats()["tcpd"]["window_probes"] >= 3, 10, 0.05, "three window probes")
        probes_before = stack.stats()["tcpd"]["window_probes"]
        stack.cli("impair", "--loss", "1", "--direction", "in")
        resume.set()
        wait_for(lambda: stack.stats()["nicd"]["impair_dropped"] >= 1, 5, 0.02, "the window update dropped")
        stack.cli("impair", "--off")
        sender.join(30)
        assert not sender.is_alive() and not errors, errors
        assert reader.result(30) == (size, hashlib.sha256(data).hexdigest())
        assert stack.stats()["tcpd"]["window_probes"] > probes_before        # a probe found it open
    finally:
        resume.set()
        sender.join(5)
    segments = capture.stop()
    kernel_acks = [s["ack"] for s in segments if s["src"] == stack.host and s["sport"] == 5402]
    probes = [s for s in segments if s["src"] == stack.addr and s["dport"] == 5402 and s["len"] == 0
              and s["flags"] == 0x10 and ((s["seq"] + 1) & 0xFFFFFFFF) in kernel_acks]
    assert len(probes) >= 3
    gaps = [b["time"] - a["time"] for a, b in zip(probes, probes[1:4])]
    assert all(later > earlier * 1.5 for earlier, later in zip(gaps, gaps[1:])), f"no backoff: {gaps}"


# ------------------------------------------------------------------ 4. keepalive
def test_keepalive_detects_a_vanished_peer_and_keeps_a_live_one(stack):
    idle, interval, count = 1, 1, 2
    server = ns.KernelProcess(stack.netns, peers.echo_server, stack.host, 5403)
    try:
        wait_for(lambda: (s := connect_or_none((stack.host, 5403), timeout=5, retry_on=(ConnectionRefusedError, TimeoutError))) and (s.close() or True), 10, 0.05,
                 "the kernel echo server")
        socks = []
        for _ in range(2):
            s = libsock.create_connection((stack.host, 5403), timeout=5)
            s.setsockopt(libsock.SOL_SOCKET, libsock.SO_KEEPALIVE, 1)
            s.setsockopt(libsock.IPPROTO_TCP, libsock.TCP_KEEPIDLE, idle)
            s.setsockopt(libsock.IPPROTO_TCP, libsock.TCP_KEEPINTVL, interval)
            s.setsockopt(libsock.IPPROTO_TCP, libsock.TCP_KEEPCNT, count)
            socks.append(s)
        for s in socks:
            s.sendall(b"x")
            assert s.recv(10) == b"x"
        dead, live = socks
        dead_port = dead.getsockname()[1]
        # the peer of `dead` disappears: every packet of that connection is dropped, both ways
        ipt(stack, "-I", "OUTPUT", "-o", "tun0", "-p", "tcp", "--sport", "5403", "--dport", str(dead_port), "-j", "DROP")
        ipt(stack, "-I", "INPUT", "-i", "tun0", "-p", "tcp", "--dport", "5403", "--sport", str(dead_port), "-j", "DROP")
        start = time.monotonic()                       # both idle from here (nothing in flight)
        dead.settimeout(10)                            # a guard: socket.timeout has no ETIMEDOUT errno
        with pytest.raises(TimeoutError) as exc:
            dead.recv(10)
        elapsed = time.monotonic() - start
        assert exc.value.errno == errno.ETIMEDOUT
        expected = idle + count * interval
        assert expected - 0.3 <= elapsed <= expected + 1.5, elapsed
        counters = stack.stats()["tcpd"]
        assert counters["keepalive_timeouts"] == 1
        assert counters["keepalive_probes"] >= count + 2       # dead's unanswered ones and live's answered ones
        assert [r["state"] for r in conns(stack, live.getsockname()[1])] == ["ESTABLISHED"]
        live.sendall(b"still there")
        assert live.recv(100) == b"still there"
        dead.close()
        live.close()
    finally:
        server.kill()


# ------------------------------------------------------------------ 5. connection establishment
def test_connect_to_a_silent_address_times_out_with_doubling_syn_intervals(tmp_path):
    s = start_stack(settings=["tcp.connect_timeout=3", "tcp.rto_initial=0.2"])
    try:
        # the kernel owns no 198.18.0.77 and does not forward: the SYNs vanish
        assert ns.run(s.netns, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "0"
        capture = Capture(s, tmp_path / "syn.pcap")
        old = os.environ.get("NETSTACK_RUN")
        os.environ["NETSTACK_RUN"] = s.run_dir
        try:
            sock = libsock.socket()
            start = time.monotonic()
            with pytest.raises(TimeoutError) as exc:
                sock.connect(("198.18.0.77", 80))
            elapsed = time.monotonic() - start
            sock.close()
        finally:
            if old is None:
                os.environ.pop("NETSTACK_RUN", None)
            else:
                os.environ["NETSTACK_RUN"] = old
        assert exc.value.errno == errno.ETIMEDOUT
        assert 2.9 <= elapsed <= 3.8, elapsed
        syns = [p["time"] for p in capture.stop() if p["dst"] == "198.18.0.77" and p["flags"] == 0x02]
        assert len(syns) >= 4, syns                  # at 0, 0.2, 0.6, 1.4 (then 3.0, at the deadline)
        gaps = [b - a for a, b in zip(syns, syns[1:])][:4]
        assert gaps[0] == pytest.approx(0.2, abs=0.1)
        for earlier, later in zip(gaps, gaps[1:]):
            assert later == pytest.approx(2 * earlier, rel=0.25), gaps
    finally:
        stop_stack(s)


# ------------------------------------------------------------------ 6. FIN_WAIT_2 and TIME_WAIT
def test_fin_wait_2_ends_on_time_and_the_port_binds_again(stack):
    release = multiprocessing.get_context("fork").Event()
    peer = ns.KernelProcess(stack.netns, holder, stack.host, 5404, release)
    try:
        port = 40101
        sock = wait_for(lambda: _bound_connect(port, (stack.host, 5404)), 10, 0.05, "the kernel server")
        sock.sendall(b"hello")
        sock.close()                                   # the peer never closes: an orphan in FIN_WAIT_2
        closed = time.monotonic()
        row = wait_for(lambda: [r for r in conns(stack, port) if r["state"] == "FIN_WAIT_2"], 5, 0.02,
                       "FIN_WAIT_2")[0]
        assert 0 < row["timers"]["fin_wait_2"] <= 2.0
        wait_for(lambda: not conns(stack, port), 5, 0.05, "the FIN_WAIT_2 timeout")
        elapsed = time.monotonic() - closed
        assert 1.8 <= elapsed <= 3.0, elapsed
        with libsock.socket() as again:
            again.bind(("0.0.0.0", port))
        release.set()
        assert peer.result(5) == b"hello"
    finally:
        release.set()
        peer.kill()


def _bound_connect(port, address):
    sock = libsock.socket()
    sock.bind(("0.0.0.0", port))
    try:
        sock.settimeout(5)
        sock.connect(address)
    except ConnectionRefusedError:
        sock.close()
        return None
    sock.settimeout(None)
    return sock


def test_time_wait_lasts_2msl_and_the_port_binds_again(stack):
    server = ns.KernelProcess(stack.netns, peers.echo_server, stack.host, 5405)
    try:
        port = 40102
        sock = wait_for(lambda: _bound_connect(port, (stack.host, 5405)), 10, 0.05, "the kernel server")
        sock.sendall(b"ping")
        assert sock.recv(10) == b"ping"
        sock.shutdown(libsock.SHUT_WR)                 # we close first: TIME_WAIT is ours
        assert sock.recv(10) == b""
        sock.close()
        closed = time.monotonic()
        row = wait_for(lambda: [r for r in conns(stack, port) if r["state"] == "TIME_WAIT"], 5, 0.02,
                       "TIME_WAIT")[0]
        assert 0 < row["timers"]["time_wait"] <= 1.0          # 2 x msl (0.5 s)
        with libsock.socket() as busy:
            with pytest.raises(OSError) as exc:
                busy.bind(("0.0.0.0", port))
            assert exc.value.errno == errno.EADDRINUSE
        wait_for(lambda: not conns(stack, port), 5, 0.05, "the 2MSL timeout")
        elapsed = time.monotonic() - closed
        assert 0.9 <= elapsed <= 2.0, elapsed
        again = _bound_connect(port, (stack.host, 5405))
        with again:
            again.sendall(b"pong")
            assert again.recv(10) == b"pong"
    finally:
        server.kill()


# ------------------------------------------------------------------ timer slack (tcp.timer_slack)
def test_short_connections_timers_mostly_stay_in_tcpd_and_time_wait_still_ends(stack):
    """Each short connection arms its SYN's retransmission and connection timers and cancels them
    a round trip later: within the slack those arms never reach timerd.  What must fire still does:
    every TIME_WAIT ends after 2MSL."""
    server = ns.KernelProcess(stack.netns, peers.echo_server, stack.host, 5406)
    try:
        wait_for(lambda: connect_or_none((stack.host, 5406)), 10, 0.05, "the kernel server").close()
        before = stack.stats()
        count = 30
        for _ in range(count):
            with libsock.create_connection((stack.host, 5406), timeout=5) as sock:
                sock.sendall(b"x")
                assert sock.recv(1) == b"x"
        wait_for(lambda: not conns(stack, 5406, "remote"), 5, 0.05, "every TIME_WAIT to end")
        after = stack.stats()
        to_timerd = after["timerd"]["ipc_in"] - before["timerd"]["ipc_in"]
        saved = after["tcpd"]["timer_requests_saved"] - before["tcpd"]["timer_requests_saved"]
        assert to_timerd < count, to_timerd                # sent one by one: 3 per connection
        # 2 per connection when every round trip is within the slack; a loaded machine's slower
        # ones send some (54 of 60 saved at load 13); without the slack none is saved
        assert saved >= count, saved
        assert after["timerd"]["fired"] - before["timerd"]["fired"] >= 1      # the 2MSL timers, batched
    finally:
        server.kill()
