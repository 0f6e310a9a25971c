"""`netstack bench`: throughput, latency and connection rate of the stack, beside
the kernel's own figures measured in the same run.

Targets (the same workload code for each, with the socket module passed in):
- netstack:   libsock in a process of its own  <->  the kernel in the instance's namespace
- veth:       the kernel to itself over a veth pair between two namespaces
- tun-relay:  the kernel to itself over two TUN devices joined by a Python relay
              (one user-space hop with no TCP in it)
Each figure is the median of several trials, with min and max.

Workloads: bulk each way, 1-byte request/response (blocking and asyncio), HTTP keep-alive
(`http`: Python's http.server and http.client, unmodified, each side as client and as server),
bulk under 1 % random loss on the receiving side (`loss`: iptables INPUT rules; for the kernel's
data into the stack nicd's impairment stage, as an OUTPUT drop is no loss to the kernel; the
veth baseline sends one segment per packet meanwhile), the connection rate, UDP.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import multiprocessing
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

import msgpack
import zmq

from deploy import control as ctl
from deploy import instance as inst

MiB = 1 << 20
# what a run creates is named after it: two benches at once (a test suite beside a user's run)
# took each other's namespaces and instance down ("tcpd restarted", connects that timed out)
RUN_TAG = f"bench{os.getpid() % 100000}"
PORT = 9000
# what `--workloads` chooses among: TCP (bulk, request/response, asyncio, HTTP, loss, connection
# rates), UDP (datagram rates, request/response), scale (concurrent connections and idle CPU)
WORKLOADS = ("tcp", "udp", "scale")
_libc = ctypes.CDLL(None, use_errno=True)


# -- where things run -------------------------------------------------------------

def _enter(netns: str | None) -> None:
    if netns:
        fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        try:
            if _libc.setns(fd, 0x40000000) != 0:
                raise OSError(ctypes.get_errno(), "setns")
        finally:
            os.close(fd)


def _child(netns, module, fn, args, queue, env):
    try:
        os.environ.update(env)
        _enter(netns)
        sockmod = __import__(module)
        queue.put(("ok", fn(sockmod, *args)))
    except BaseException:
        queue.put(("error", traceback.format_exc()))


class Side:
    """One end of a workload: a namespace (or none) and a socket module."""

    def __init__(self, netns: str | None, module: str, addr: str, env: dict | None = None):
        self.netns, self.module, self.addr, self.env = netns, module, addr, env or {}

    def start(self, fn, *args):
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(self.netns, self.module, fn, args, queue, self.env), daemon=True)
        proc.start()
        return proc, queue


def _finish(started, timeout: float = 600):
    proc, queue = started
    try:
        status, value = queue.get(timeout=timeout)
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
    if status != "ok":
        raise RuntimeError(value)
    return value


# -- workloads: fn(sockmod, ...) run inside a Side ---------------------------------------

def _pattern(size: int) -> bytes:
    return (bytes(range(256)) * 4096 * (size // MiB + 1))[:size]


def w_send(sm, host, port, size, watched=False):
    data = _pattern(size)
    view = memoryview(data)
    sock = _connect_retry(sm, host, port)
    if watched:
        sock.fileno()        # libsock: tcpd tells this process the socket's readiness from now on
    start = time.perf_counter()
    with sock:
        for off in range(0, size, MiB):
            sock.sendall(view[off:off + MiB])
        sock.shutdown(sm.SHUT_WR)
        sock.recv(1)
    return time.perf_counter() - start, hashlib.sha256(data).hexdigest()


def w_receive(sm, host, port, watched=False):
    with sm.create_server((host, port)) as listener:
        conn, _ = listener.accept()
        if watched:
            conn.fileno()
        with conn:
            digest, total = hashlib.sha256(), 0
            start = None
            while data := conn.recv(MiB):
                if start is None:
                    start = time.perf_counter()
                digest.update(data)
                total += len(data)
            elapsed = time.perf_counter() - (start or time.perf_counter())
    return total, digest.hexdigest(), elapsed


def w_echo_server(sm, host, port, connections):
    with sm.create_server((host, port), backlog=128) as listener:
        for _ in range(connections):
            conn, _ = listener.accept()
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)
    return True


def w_request_response(sm, host, port, count):
    sock = _connect_retry(sm, host, port)
    sock.setsockopt(sm.IPPROTO_TCP, sm.TCP_NODELAY, 1)
    with sock:
        return _round_trips(sock, count)


def _round_trips(sock, count: int) -> tuple[float, float]:
    """p50 and p99 (us) of `count` one-byte exchanges on a connected socket."""
    samples = []
    for _ in range(count):
        t = time.perf_counter()
        sock.send(b"x")
        sock.recv(1)
        samples.append(time.perf_counter() - t)
    return _p50_p99_us(samples)


def w_asyncio_request_response(sm, host, port, count):
    """The same exchange through asyncio's streams (selector loop, the socket's fileno() in epoll)."""
    import asyncio
    sock = _connect_retry(sm, host, port)
    sock.setsockopt(sm.IPPROTO_TCP, sm.TCP_NODELAY, 1)
    sock.setblocking(False)

    async def exchange():
        reader, writer = await asyncio.open_connection(sock=sock)
        samples = []
        for _ in range(count):
            t = time.perf_counter()
            writer.write(b"x")
            await reader.readexactly(1)
            samples.append(time.perf_counter() - t)
        writer.close()
        return samples

    return _p50_p99_us(asyncio.run(exchange()))


def w_asyncio_echo_server(sm, host, port, connections):
    """An asyncio streams echo server on a listener of `sm`, until `connections` have ended."""
    import asyncio
    listener = sm.create_server((host, port), backlog=128)

    async def serve():
        done = asyncio.Event()
        ended = 0

        async def echo(reader, writer):
            nonlocal ended
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()
            ended += 1
            if ended == connections:
                done.set()

        server = await asyncio.start_server(echo, sock=listener)
        await done.wait()
        server.close()

    asyncio.run(serve())
    return True


def _p50_p99_us(samples: list) -> tuple[float, float]:
    samples.sort()
    return samples[len(samples) // 2] * 1e6, samples[int(len(samples) * 0.99)] * 1e6


def _connect_retry(sm, host, port):
    for _ in range(250):
        try:
            return sm.create_connection((host, port), timeout=30)
        except ConnectionRefusedError:
            time.sleep(0.02)
    raise ConnectionRefusedError(f"{host}:{port}")


def w_connection_rate(sm, host, port, count):
    _connect_retry(sm, host, port).close()           # the server is up; this is connection 0
    marks = []
    start = time.perf_counter()
    for i in range(count - 1):
        with sm.create_connection((host, port), timeout=30) as sock:
            sock.send(b"x")
            sock.recv(1)
        if (i + 2) % 1000 == 0 or i == count - 2:
            marks.append(time.perf_counter())
    block = min(1000, count - 1)
    first = block / (marks[0] - start)
    last = block / (marks[-1] - marks[-2]) if len(marks) > 1 else first
    return first, last


# -- UDP: datagrams one way (rate and loss), and a 1-byte request/response -------------------

UDP_END = b"END"


def _http_modules(sm):
    """http.client and http.server as an unmodified program gets them, over `sm` (libsock stands in
    for `socket` as `netstack run` makes it; the kernel's socket module otherwise)."""
    import importlib
    for name in ("http.client", "http.server", "socketserver"):
        sys.modules.pop(name, None)
    sys.modules["socket"] = sm
    return importlib.import_module("http.client"), importlib.import_module("http.server")


def w_http_server(sm, host, port, ready):
    """Python's http.server, HTTP/1.1 keep-alive: one connection, as many requests as it brings.
    The handler writes its headers and its body in two sends (the headers at end_headers), the
    pattern that a Nagle-bound sender and a delayed ACK turn into a 40-200 ms stall."""
    _, server = _http_modules(sm)
    body = b"x" * 1000

    class Handler(server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    with server.HTTPServer((host, port), Handler) as httpd:
        ready.set()
        httpd.handle_request()
    return True


def w_http_client(sm, host, port, count, ready):
    """`count` GETs on one keep-alive connection with http.client: p50, p99 per request (us)."""
    client, _ = _http_modules(sm)
    ready.wait(30)
    conn = client.HTTPConnection(host, port, timeout=60)
    samples = []
    for i in range(count + 5):
        t = time.perf_counter()
        conn.request("GET", "/")
        response = conn.getresponse()
        assert len(response.read()) == 1000 and response.status == 200
        if i >= 5:                                       # the first ones open the connection
            samples.append(time.perf_counter() - t)
    conn.close()
    return _p50_p99_us(samples)


def w_udp_sink(sm, host, port, ready):
    """Count datagrams until END (or 2 s of silence after the first); (count, seconds first -> last)."""
    with sm.socket(sm.AF_INET, sm.SOCK_DGRAM) as sock:
        sock.setsockopt(sm.SOL_SOCKET, sm.SO_RCVBUF, 1 << 22)       # clamped to rmem_max, as the kernel does
        sock.bind((host, port))
        ready.set()
        sock.settimeout(60)
        count, first, last = 0, None, None
        try:
            while (data := sock.recv(2048)) != UDP_END:
                last = time.perf_counter()
                if first is None:
                    first = last
                    sock.settimeout(2)
                count += 1
        except TimeoutError:
            pass
    return count, (last - first) if count > 1 else 0.0


def w_udp_blast(sm, host, port, size, count, ready):
    """Send `count` datagrams of `size` bytes as fast as sendto() returns; the seconds it took."""
    ready.wait(30)
    payload = bytes(size)
    with sm.socket(sm.AF_INET, sm.SOCK_DGRAM) as sock:
        start = time.perf_counter()
        for _ in range(count):
            try:
                sock.sendto(payload, (host, port))
            except OSError:        # ENOBUFS from a full device queue: counted as lost
                pass
        elapsed = time.perf_counter() - start
        for _ in range(20):        # END may be lost like any datagram: the sink also stops on silence
            sock.sendto(UDP_END, (host, port))
            time.sleep(0.01)
    return elapsed


def w_udp_echo(sm, host, port, count, ready):
    with sm.socket(sm.AF_INET, sm.SOCK_DGRAM) as sock:
        sock.bind((host, port))
        ready.set()
        sock.settimeout(30)
        for _ in range(count):
            data, peer = sock.recvfrom(2048)
            sock.sendto(data, peer)
    return True


def w_udp_request_response(sm, host, port, count, ready):
    ready.wait(30)
    with sm.socket(sm.AF_INET, sm.SOCK_DGRAM) as sock:
        sock.connect((host, port))
        sock.settimeout(5)
        return _round_trips(sock, count)


def w_asyncio_udp_request_response(sm, host, port, count, ready):
    """The same exchange through an asyncio datagram endpoint (the socket's fileno() in epoll)."""
    import asyncio
    ready.wait(30)
    sock = sm.socket(sm.AF_INET, sm.SOCK_DGRAM)
    sock.connect((host, port))
    sock.setblocking(False)

    class Client(asyncio.DatagramProtocol):
        def __init__(self):
            self.answer = None

        def datagram_received(self, data, addr):
            if self.answer is not None and not self.answer.done():
                self.answer.set_result(data)

    async def exchange():
        loop = asyncio.get_running_loop()
        transport, client = await loop.create_datagram_endpoint(Client, sock=sock)
        samples = []
        for _ in range(count):
            t = time.perf_counter()
            client.answer = loop.create_future()
            transport.sendto(b"x")
            await asyncio.wait_for(client.answer, 5)
            samples.append(time.perf_counter() - t)
        transport.close()
        return samples

    return _p50_p99_us(asyncio.run(exchange()))


# -- targets --------------------------------------------------------------------------------

class Target:
    name = ""

    def sides(self) -> tuple[Side, Side]:
        """(the side under test, the kernel peer)."""
        raise NotImplementedError

    def measure(self, quick: bool, trials: int, workloads: frozenset = frozenset(WORKLOADS)) -> dict:
        return measure(self, quick, trials, workloads)

    def close(self) -> None:
        pass

    # random loss on the receiving side, for the `loss` workload (None: the target has none)
    lossy = False

    def set_loss(self, direction: str, p: float) -> None:
        """`direction` "out": what the side under test sends is dropped with probability p as it
        reaches the kernel peer; "in": what the kernel peer sends, as it reaches the side.  p=0: off."""
        raise NotImplementedError

    def sender_counters(self, direction: str) -> tuple[int, int]:
        """(segments retransmitted, retransmission timeouts) so far of the sender of `direction`."""
        raise NotImplementedError


def _iptables_loss(netns: str, dev: str, p: float) -> None:
    """A `statistic --mode random` DROP rule on INPUT from `dev` in `netns` (p=0: removed)."""
    rule = ["INPUT", "-i", dev, "-m", "statistic", "--mode", "random", "--probability", str(p), "-j", "DROP"]
    if p:
        subprocess.run(["ip", "netns", "exec", netns, "iptables", "-A", *rule], check=True, capture_output=True)
    else:
        subprocess.run(["ip", "netns", "exec", netns, "iptables", "-F", "INPUT"], check=True, capture_output=True)


def _kernel_counters(netns: str) -> tuple[int, int]:
    """RetransSegs (/proc/net/snmp) and TCPTimeouts (/proc/net/netstat) of a namespace's TCP."""
    out = {}
    for path in ("/proc/net/snmp", "/proc/net/netstat"):
        text = subprocess.run(["ip", "netns", "exec", netns, "cat", path], check=True, capture_output=True,
                              text=True).stdout.splitlines()
        for head, values in zip(text[::2], text[1::2]):
            prefix = head.split(":")[0]
            for key, value in zip(head.split()[1:], values.split()[1:]):
                out[f"{prefix}.{key}"] = int(value)
    return out.get("Tcp.RetransSegs", 0), out.get("TcpExt.TCPTimeouts", 0)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class Veth(Target):
    name = "veth"

    def __init__(self, mtu: int):
        self.a, self.b = f"netstack-{RUN_TAG}-va", f"netstack-{RUN_TAG}-vb"
        for ns in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", self.a, "link", "add", "veth0", "mtu", str(mtu), "type", "veth", "peer", "name", "veth1",
            "netns", self.b, "mtu", str(mtu))
        _ip("-n", self.a, "addr", "add", "198.18.1.1/24", "dev", "veth0")
        _ip("-n", self.b, "addr", "add", "198.18.1.2/24", "dev", "veth1")
        _ip("-n", self.a, "link", "set", "veth0", "up")
        _ip("-n", self.b, "link", "set", "veth1", "up")

    def sides(self):
        return Side(self.b, "socket", "198.18.1.2"), Side(self.a, "socket", "198.18.1.1")

    lossy = True

    def set_loss(self, direction, p):
        # one segment per packet while loss is on, as the stack sends them (no GSO super-packet
        # dropped whole); the side under test is in b (veth1), the kernel peer in a (veth0)
        segs = "1" if p else "65535"
        _ip("-n", self.a, "link", "set", "veth0", "gso_max_segs", segs)
        _ip("-n", self.b, "link", "set", "veth1", "gso_max_segs", segs)
        if direction == "out":
            _iptables_loss(self.a, "veth0", p)
        else:
            _iptables_loss(self.b, "veth1", p)

    def sender_counters(self, direction):
        return _kernel_counters(self.b if direction == "out" else self.a)

    def close(self):
        for ns in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _relay(ns_a: str, ns_b: str, ready) -> None:
    import fcntl
    import struct
    fds = []
    for ns in (ns_a, ns_b):
        _enter(ns)
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", b"tun0", 0x0001 | 0x1000))   # TUNSETIFF, IFF_TUN|IFF_NO_PI
        fds.append(fd)
    ready.set()
    a, b = fds
    other = {a: b, b: a}
    while True:
        for fd in select.select(fds, [], [])[0]:
            for _ in range(64):
                try:
                    os.write(other[fd], os.read(fd, 65536))
                except OSError:          # BlockingIOError: drained; others: drop like a wire
                    break


class TunRelay(Target):
    name = "tun-relay"

    def __init__(self, mtu: int):
        self.a, self.b = f"netstack-{RUN_TAG}-ta", f"netstack-{RUN_TAG}-tb"
        for ns, addr in ((self.a, "198.18.2.1"), (self.b, "198.18.2.2")):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "tuntap", "add", "dev", "tun0", "mode", "tun")
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "tun0")
            _ip("-n", ns, "link", "set", "tun0", "mtu", str(mtu), "up")
        ctx = multiprocessing.get_context("fork")
        ready = ctx.Event()
        self.proc = ctx.Process(target=_relay, args=(self.a, self.b, ready), daemon=True)
        self.proc.start()
        ready.wait(10)

    def sides(self):
        return Side(self.b, "socket", "198.18.2.2"), Side(self.a, "socket", "198.18.2.1")

    def close(self):
        self.proc.kill()
        self.proc.join(5)
        for ns in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


class Netstack(Target):
    name = "netstack"
    settings: tuple = ()
    offload = False

    def __init__(self, mtu: int, overrides: list[str] = ()):
        self.name_ = RUN_TAG
        inst.down(self.name_, quiet=True)
        self.instance = inst.up(self.name_, None, "tun0", "198.18.0.2/24", "198.18.0.1", mtu, None,
                                [*self.settings, *overrides], offload=self.offload)

    def sides(self):
        env = {"NETSTACK_RUN": str(self.instance.run_dir)}
        return (Side(None, "libsock", self.instance.addr, env),
                Side(self.instance.netns, "socket", self.instance.host_addr))

    @property
    def lossy(self):
        return not self.offload            # (super-segments would be dropped whole)

    def set_loss(self, direction, p):
        if direction == "out":
            _iptables_loss(self.instance.netns, "tun0", p)
        elif p:
            # an OUTPUT drop in the kernel's namespace is no loss (its transmit gets EPERM and the
            # segment goes later): nicd drops what comes in from the device instead
            ctl.control(self.instance.run_dir, "nicd", "impair", loss=p, direction="in", seed=17)
        else:
            ctl.control(self.instance.run_dir, "nicd", "impair_off")

    def sender_counters(self, direction):
        if direction == "in":
            return _kernel_counters(self.instance.netns)
        stats = ctl.control(self.instance.run_dir, "tcpd", "stats")
        return stats["retrans_segs"], stats["rto_expiries"]

    def service_pids(self) -> dict[str, int]:
        return {row["service"]: row["pid"] for row in inst.status(self.name_)}

    def close(self):
        inst.down(self.name_)


class NetstackOffload(Netstack):
    """The stack with TSO and checksum offload: 64 KiB super-segments cross the device."""
    name = "netstack-tso"
    offload = True


class NetstackVolatile(Netstack):
    """The stack without tcpd's store (tcp.durable=0): what keeping connections through a tcpd
    death costs is the difference from `netstack` (docs/tcpd-recovery.md)."""
    name = "netstack-volatile"
    settings = ("tcp.durable=0",)


def _forwarder(run_dir: str, me: int, last: bool, ready) -> None:
    """Stage `me` of the ZeroMQ chain, built as the services are: every message arrives at its
    ROUTER, and it sends through DEALERs named after itself.  A message from upstream goes on
    down the chain (the last stage turns it back, where nicd would cross the device); one from
    downstream goes back up (the first stage replies to the client, as tcpd replies to libsock)."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.bind(f"ipc://{run_dir}/{me}.sock")

    def dealer(to: int):
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, str(me).encode())
        sock.connect(f"ipc://{run_dir}/{to}.sock")
        return sock
    up = dealer(me - 1) if me > 0 else None
    down = dealer(me + 1) if not last else None
    client = None
    ready.set()
    while True:
        identity, header, payload = router.recv_multipart()
        going_down = msgpack.unpackb(header)[1] == "down"
        if going_down and me == 0:
            client = identity
        if going_down and last:
            header = msgpack.packb([1, "up"])
            going_down = False
        if going_down:
            down.send_multipart([header, payload])
        elif me == 0:
            router.send_multipart([client, header, payload])
        else:
            up.send_multipart([header, payload])


def w_chain_request_response(endpoint: str, count: int):
    """w_request_response's loop, through the chain: a msgpack header and a 1-byte payload frame."""
    sock = zmq.Context().socket(zmq.DEALER)
    sock.connect(endpoint)
    header = msgpack.packb([1, "down"])
    for _ in range(100):                                # the chain connects its stages lazily
        sock.send_multipart([header, b"x"])
        sock.recv_multipart()
    samples = []
    for _ in range(count):
        t = time.perf_counter()
        sock.send_multipart([header, b"x"])
        sock.recv_multipart()
        samples.append(time.perf_counter() - t)
    return _p50_p99_us(samples)


class ZmqChain(Target):
    """The floor of the stack's transport: three Python processes (where tcpd, ipd and nicd run)
    joined by ZeroMQ ipc, that do nothing but pass a message on.  A request/response on the stack
    crosses the same six hops (libsock -> tcpd -> ipd -> nicd, and back), plus the device and the
    kernel; so no figure of the stack's can beat this one's."""
    name = "zmq-chain"
    STAGES = 3

    def __init__(self, mtu: int):
        self.run_dir = tempfile.mkdtemp(prefix="netstack-bench-chain-")
        ctx = multiprocessing.get_context("fork")
        self.procs = []
        for me in range(self.STAGES):
            ready = ctx.Event()
            proc = ctx.Process(target=_forwarder, args=(self.run_dir, me, me == self.STAGES - 1, ready),
                               daemon=True)
            proc.start()
            ready.wait(10)
            self.procs.append(proc)

    def measure(self, quick: bool, trials: int, workloads: frozenset = frozenset(WORKLOADS)) -> dict:
        latencies = []

        def rr():
            ctx = multiprocessing.get_context("fork")
            queue = ctx.Queue()
            count = 2000 if quick else 20000
            proc = ctx.Process(target=lambda: queue.put(("ok", w_chain_request_response(
                f"ipc://{self.run_dir}/0.sock", count))), daemon=True)
            proc.start()
            p50, p99 = _finish((proc, queue))
            latencies.append(p99)
            return p50
        result = {"rr_p50_us": _trials(trials, rr)}
        result["rr_p99_us"] = _spread(latencies)
        return result

    def close(self):
        for proc in self.procs:
            proc.kill()
            proc.join(5)
        shutil.rmtree(self.run_dir, ignore_errors=True)


TARGETS = {"netstack": Netstack, "netstack-tso": NetstackOffload, "netstack-volatile": NetstackVolatile,
           "veth": Veth, "tun-relay": TunRelay,
           "zmq-chain": ZmqChain}


# -- running ----------------------------------------------------------------------------------

def _spread(values: list) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _trials(n: int, fn) -> dict:
    return _spread([fn() for _ in range(n)])


def measure(target: Target, quick: bool, trials: int, workloads: frozenset = frozenset(WORKLOADS)) -> dict:
    ours, peer = target.sides()
    bulk_size = 16 * MiB if quick else 256 * MiB
    port = [PORT]

    def next_port():
        port[0] += 1
        return port[0]

    def bulk(sender: Side, receiver: Side, watched: bool = False, size: int = bulk_size) -> float:
        """MB/s of `size` bytes from sender to receiver, sha256 checked (watched: both ends'
        fileno() taken first, so that libsock tracks their readiness)."""
        p = next_port()
        rx = receiver.start(w_receive, receiver.addr, p, watched)
        tx = sender.start(w_send, receiver.addr, p, size, watched)
        seconds, digest = _finish(tx)
        total, got, _ = _finish(rx)
        assert total == size and got == digest, f"bulk to {receiver.addr}: data differs"
        return size / seconds / 1e6

    http_p99s: dict[str, list] = {}

    def http(server: Side, client: Side, key: str) -> float:
        """p50 (us) of keep-alive GETs from http.client on `client` to http.server on `server`."""
        p = next_port()
        ready = multiprocessing.get_context("fork").Event()
        srv = server.start(w_http_server, server.addr, p, ready)
        p50, p99 = _finish(client.start(w_http_client, server.addr, p, 50 if quick else 200, ready))
        _finish(srv)
        http_p99s.setdefault(key, []).append(p99)
        return p50

    loss_counts: dict[str, list] = {}

    def lossy_bulk(direction: str, p: float) -> float:
        """MB/s of a bulk transfer with random loss `p` on the receiving side; the sender's
        retransmissions and timeouts per MiB kept beside it."""
        size = 4 * MiB if quick else 16 * MiB
        target.set_loss(direction, p)
        try:
            before = target.sender_counters(direction)
            mbps = bulk(ours, peer, size=size) if direction == "out" else bulk(peer, ours, size=size)
            after = target.sender_counters(direction)
        finally:
            target.set_loss(direction, 0)
        loss_counts.setdefault(f"{direction}_retrans", []).append((after[0] - before[0]) / (size / MiB))
        loss_counts.setdefault(f"{direction}_rto", []).append((after[1] - before[1]) / (size / MiB))
        return mbps

    latencies, async_latencies = [], []

    def rr(workload=w_request_response, p99s=latencies, count=20000):
        p = next_port()
        srv = peer.start(w_echo_server, peer.addr, p, 1)
        p50, p99 = _finish(ours.start(workload, peer.addr, p, 2000 if quick else count))
        _finish(srv)
        p99s.append(p99)
        return p50

    def async_rr():
        return rr(w_asyncio_request_response, async_latencies, 10000)

    rates_last = []

    def rate():
        p = next_port()
        count = 1000 if quick else 10000
        srv = peer.start(w_echo_server, peer.addr, p, count)
        first, last = _finish(ours.start(w_connection_rate, peer.addr, p, count))
        _finish(srv)
        rates_last.append(last)
        return first

    def async_accept_rate():
        """An asyncio server on the side under test, the kernel connecting (first 1,000)."""
        p = next_port()
        count = 1001 if quick else 2001
        srv = ours.start(w_asyncio_echo_server, ours.addr, p, count)
        first, _ = _finish(peer.start(w_connection_rate, ours.addr, p, count))
        _finish(srv)
        return first

    if "tcp" not in workloads:
        return measure_udp(ours, peer, quick, trials, next_port) if "udp" in workloads else {}
    result = {
        "bulk_in_MBps": _trials(trials, lambda: bulk(peer, ours)),       # kernel -> the side under test
        "bulk_out_MBps": _trials(trials, lambda: bulk(ours, peer)),      # the side under test -> kernel
        "rr_p50_us": _trials(trials, rr),
    }
    result["rr_p99_us"] = _spread(latencies)
    result["asyncio_rr_p50_us"] = _trials(trials, async_rr)
    result["asyncio_rr_p99_us"] = _spread(async_latencies)
    if target.name.startswith("netstack"):     # readiness tracking's cost: both ends watched
        result["bulk_in_watched_MBps"] = _trials(trials, lambda: bulk(peer, ours, True))
        result["bulk_out_watched_MBps"] = _trials(trials, lambda: bulk(ours, peer, True))
    result["http_client_p50_us"] = _trials(trials, lambda: http(peer, ours, "client"))
    result["http_client_p99_us"] = _spread(http_p99s["client"])
    result["http_server_p50_us"] = _trials(trials, lambda: http(ours, peer, "server"))
    result["http_server_p99_us"] = _spread(http_p99s["server"])
    if target.lossy:
        for direction in ("out", "in"):
            result[f"loss1_{direction}_MBps"] = _trials(trials, lambda: lossy_bulk(direction, 0.01))
            for what in ("retrans", "rto"):
                result[f"loss1_{direction}_{what}_per_MiB"] = _spread(loss_counts[f"{direction}_{what}"])
    result["conn_rate_first_per_s"] = _trials(trials, rate)
    result["conn_rate_last_per_s"] = _spread(rates_last)
    result["asyncio_server_conn_per_s"] = _trials(trials, async_accept_rate)
    if "udp" in workloads:
        result.update(measure_udp(ours, peer, quick, trials, next_port))
    return result


def measure_udp(ours: Side, peer: Side, quick: bool, trials: int, next_port) -> dict:
    """Datagrams per second delivered one way (the side under test sending, then receiving) at
    64 and 1,472 bytes, with the share lost; a 1-byte UDP request/response."""
    count = 2000 if quick else 20000
    ctx = multiprocessing.get_context("fork")
    losses: dict[str, list] = {}

    def one_way(sender: Side, receiver: Side, size: int, key: str) -> float:
        p, ready = next_port(), ctx.Event()
        rx = receiver.start(w_udp_sink, receiver.addr, p, ready)
        seconds = _finish(sender.start(w_udp_blast, receiver.addr, p, size, count, ready))
        received, _ = _finish(rx)
        losses.setdefault(key, []).append(100.0 * (count - received) / count)
        return received / seconds

    def rr(workload=w_udp_request_response, key="rr_p99") -> float:
        p, ready = next_port(), ctx.Event()
        rounds = 2000 if quick else 20000
        srv = peer.start(w_udp_echo, peer.addr, p, rounds, ready)
        p50, p99 = _finish(ours.start(workload, peer.addr, p, rounds, ready))
        _finish(srv)
        losses.setdefault(key, []).append(p99)
        return p50

    result = {}
    for size in (64, 1472):
        result[f"udp_out_{size}_dps"] = _trials(trials, lambda: one_way(ours, peer, size, f"out_{size}"))
        result[f"udp_in_{size}_dps"] = _trials(trials, lambda: one_way(peer, ours, size, f"in_{size}"))
    result["udp_rr_p50_us"] = _trials(trials, rr)
    result["udp_rr_p99_us"] = _spread(losses.pop("rr_p99"))
    result["udp_asyncio_rr_p50_us"] = _trials(trials, lambda: rr(w_asyncio_udp_request_response, "async_p99"))
    result["udp_asyncio_rr_p99_us"] = _spread(losses.pop("async_p99"))
    for key, values in losses.items():
        result[f"udp_{key}_loss_pct"] = _spread(values)
    return result


def w_hold_connections(sm, host, port, count, ready, release):
    """Open `count` connections and hold them until `release` is set."""
    socks = []
    for _ in range(count):
        socks.append(sm.create_connection((host, port), timeout=60))
    ready.set()
    release.wait(600)
    for sock in socks:
        sock.close()
    return len(socks)


def w_accept_and_hold(sm, host, port, count, release):
    """Accept `count` connections and hold them until `release` is set."""
    with sm.create_server((host, port), backlog=1024) as listener:
        held = [listener.accept()[0] for _ in range(count)]
        release.wait(600)
        for conn in held:
            conn.close()
    return len(held)


def _rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


SCALE_SOCKETS = 65536


def measure_scale(target: "Netstack", quick: bool) -> dict:
    """(d) many concurrent established connections: all succeed, tcpd's memory per connection;
    (e) CPU of each service at idle while they stay open."""
    ours, peer = target.sides()
    count = 1000 if quick else 10000
    pids = target.service_pids()
    rss_before = _rss_kib(pids["tcpd"])
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    server = peer.start(w_accept_and_hold, peer.addr, PORT + 500, count, release)
    clients = ours.start(w_hold_connections, peer.addr, PORT + 500, count, ready, release)
    result = {}
    try:
        if not ready.wait(600):
            raise RuntimeError("the connections were not all established")
        rss_after = _rss_kib(pids["tcpd"])
        result["concurrent_connections"] = count
        result["tcpd_kib_per_connection"] = round((rss_after - rss_before) / count, 2)
        # the handshakes' lazily cancelled SYN timers fire once, for nothing, rto_initial after the
        # connect: let them pass so that what is measured is the idle stack
        settle = time.monotonic() + 15
        while time.monotonic() < settle and ctl.control(target.instance.run_dir, "timerd", "stats")["pending"]:
            time.sleep(0.1)
        window = 2.0 if quick else 10.0
        before = {service: _cpu_seconds(pid) for service, pid in pids.items()}
        time.sleep(window)          # an observation window, not synchronisation
        result["idle_cpu_percent"] = {service: round((_cpu_seconds(pid) - before[service]) / window * 100, 2)
                                      for service, pid in pids.items()}
    finally:
        release.set()
    result["connections_held"] = _finish(clients)
    _finish(server)
    return result


def run_bench(quick: bool = False, as_json: bool = False, mtu: int = 1500, targets: str = "all",
              trials: int | None = None, workloads: str = "all") -> int:
    trials = trials or (1 if quick else 3)
    names = list(TARGETS) if targets == "all" else targets.split(",")
    unknown = [name for name in names if name not in TARGETS]
    if unknown:
        print(f"netstack bench: no target {', '.join(unknown)} (targets: {', '.join(TARGETS)})", file=sys.stderr)
        return 2
    chosen = frozenset(WORKLOADS if workloads == "all" else workloads.split(","))
    if chosen - set(WORKLOADS):
        print(f"netstack bench: no workload {', '.join(sorted(chosen - set(WORKLOADS)))} "
              f"(workloads: {', '.join(WORKLOADS)})", file=sys.stderr)
        return 2
    results = {"mtu": mtu, "quick": quick, "trials": trials, "workloads": sorted(chosen), "targets": {}}
    for name in names:
        if not as_json:
            print(f"measuring {name} ...", file=sys.stderr, flush=True)
        target = TARGETS[name](mtu)
        try:
            results["targets"][name] = target.measure(quick, trials, chosen)
            if name == "netstack" and "scale" in chosen:
                # a fresh instance: the connection-rate runs leave thousands of TIME_WAITs
                # whose 2MSL timers would be counted as idle CPU
                target.close()
                # one process holds all the connections: more than limits.sockets_per_process allows
                target = TARGETS[name](mtu, [f"limits.sockets_per_process={SCALE_SOCKETS}"])
                results["scale"] = measure_scale(target, quick)
        finally:
            target.close()
    if as_json:
        print(json.dumps(results, indent=1))
    else:
        print(format_table(results))
    return 0


def format_table(results: dict) -> str:
    rows = [("bulk kernel -> side (MB/s)", "bulk_in_MBps"), ("bulk side -> kernel (MB/s)", "bulk_out_MBps"),
            ("1-byte req/resp p50 (us)", "rr_p50_us"), ("1-byte req/resp p99 (us)", "rr_p99_us"),
            ("asyncio req/resp p50 (us)", "asyncio_rr_p50_us"), ("asyncio req/resp p99 (us)", "asyncio_rr_p99_us"),
            ("asyncio server conn/s", "asyncio_server_conn_per_s"),
            ("bulk in, fileno() watched", "bulk_in_watched_MBps"),
            ("bulk out, fileno() watched", "bulk_out_watched_MBps"),
            ("conn/s, first 1000", "conn_rate_first_per_s"), ("conn/s, last 1000", "conn_rate_last_per_s"),
            ("HTTP keep-alive, side client p50 (us)", "http_client_p50_us"),
            ("HTTP keep-alive, side client p99 (us)", "http_client_p99_us"),
            ("HTTP keep-alive, side server p50 (us)", "http_server_p50_us"),
            ("HTTP keep-alive, side server p99 (us)", "http_server_p99_us"),
            ("1% loss, side -> kernel (MB/s)", "loss1_out_MBps"),
            ("  retransmitted per MiB", "loss1_out_retrans_per_MiB"), ("  RTOs per MiB", "loss1_out_rto_per_MiB"),
            ("1% loss, kernel -> side (MB/s)", "loss1_in_MBps"),
            ("  retransmitted per MiB", "loss1_in_retrans_per_MiB"), ("  RTOs per MiB", "loss1_in_rto_per_MiB"),
            ("UDP 64 B side->kernel (dgram/s)", "udp_out_64_dps"), ("  lost (%)", "udp_out_64_loss_pct"),
            ("UDP 64 B kernel->side (dgram/s)", "udp_in_64_dps"), ("  lost (%)", "udp_in_64_loss_pct"),
            ("UDP 1472 B side->kernel (dgram/s)", "udp_out_1472_dps"), ("  lost (%)", "udp_out_1472_loss_pct"),
            ("UDP 1472 B kernel->side (dgram/s)", "udp_in_1472_dps"), ("  lost (%)", "udp_in_1472_loss_pct"),
            ("UDP 1-byte req/resp p50 (us)", "udp_rr_p50_us"), ("UDP 1-byte req/resp p99 (us)", "udp_rr_p99_us"),
            ("UDP asyncio req/resp p50 (us)", "udp_asyncio_rr_p50_us"),
            ("UDP asyncio req/resp p99 (us)", "udp_asyncio_rr_p99_us")]
    targets = list(results["targets"])
    lines = [f"netstack bench (MTU {results['mtu']}, {results['trials']} trial(s) each, median [min-max])",
             f"{'figure':34}" + "".join(f"{t:>24}" for t in targets)]
    for label, key in rows:
        if ("udp" if key.startswith("udp_") else "tcp") not in results.get("workloads", WORKLOADS):
            continue                    # a workload not chosen (--workloads)
        cells = []
        for t in targets:
            v = results["targets"][t].get(key)
            digits = 1 if key.endswith(("_pct", "_per_MiB")) or key.startswith("loss") else 0
            cells.append(f"{v['median']:.{digits}f} [{v['min']:.{digits}f}-{v['max']:.{digits}f}]" if v else "-")
        lines.append(f"{label:34}" + "".join(f"{c:>24}" for c in cells))
    scale = results.get("scale")
    if scale:
        cpu = ", ".join(f"{k} {v}%" for k, v in scale["idle_cpu_percent"].items())
        lines.append(f"netstack: {scale['connections_held']} of {scale['concurrent_connections']} concurrent "
                     f"connections held, tcpd {scale['tcpd_kib_per_connection']} KiB each; idle CPU: {cpu}")
    return "\n".join(lines)
