"""Names through DNS over the stack: dnsmasq from Debian on the kernel's side (198.18.0.1),
started with its own configuration file and stopped after; libsock resolves through it."""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time

import pytest

import libsock
from tests.e2e.conftest import NETSTACK, running_stack, wait_for
from tests.e2e.netns import KernelProcess, popen

HOST = "198.18.0.1"
TIMEOUT, ATTEMPTS = 0.5, 2

pytestmark = pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="dnsmasq is not installed (make install)")


@pytest.fixture(scope="module")
def dns_stack():
    with running_stack(settings=[f"dns.servers={HOST}", f"dns.timeout={TIMEOUT}", f"dns.attempts={ATTEMPTS}"]) as s:
        yield s


@pytest.fixture(scope="module")
def dnsmasq(dns_stack, tmp_path_factory):
    folder = tmp_path_factory.mktemp("dnsmasq")
    conf = folder / "dnsmasq.conf"
    lines = ["no-resolv", "no-hosts", "bind-interfaces", f"listen-address={HOST}", "local=/test/",
             f"host-record=web.test,{HOST}", "cname=www.test,web.test",
             *[f"host-record=big.test,198.18.1.{i}" for i in range(1, 41)]]     # > 512 bytes: TC, then TCP
    conf.write_text("\n".join(lines) + "\n")
    log = open(folder / "dnsmasq.log", "w")
    proc = popen(dns_stack.netns, "dnsmasq", "--no-daemon", f"--conf-file={conf}", "--pid-file=",
                 stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _answers(dns_stack), 10, 0.05, "dnsmasq to answer")
        yield proc
    finally:
        proc.terminate()
        proc.wait(5)
        log.close()


def _answers(stack) -> bool:
    """dnsmasq answers a query from the kernel's side (dnspython over the kernel's UDP)."""
    probe = subprocess.run(["ip", "netns", "exec", stack.netns, sys.executable, "-c",
                            "import dns.message, dns.query; "
                            f"dns.query.udp(dns.message.make_query('web.test', 'A'), '{HOST}', timeout=0.3)"],
                           capture_output=True)
    return probe.returncode == 0


def _bound(stack, port: int) -> bool:
    listing = subprocess.run(["ip", "netns", "exec", stack.netns, "ss", "-Hnlu", f"sport = :{port}"],
                             capture_output=True, text=True).stdout
    return bool(listing.strip())


def test_names_resolve_through_dnsmasq(dnsmasq, dns_stack):
    assert libsock.gethostbyname("web.test") == HOST
    assert libsock.gethostbyname_ex("www.test") == ("web.test", ["www.test"], [HOST])
    info = libsock.getaddrinfo("www.test", 80, type=libsock.SOCK_STREAM, flags=libsock.AI_CANONNAME)
    assert info == [(libsock.AF_INET, libsock.SOCK_STREAM, libsock.IPPROTO_TCP, "web.test", (HOST, 80))]
    assert libsock.getnameinfo((HOST, 53), libsock.NI_NUMERICSERV) == ("web.test", "53")   # PTR
    # 40 addresses do not fit 512 bytes: dnsmasq sets TC and the resolver asks again over TCP
    assert sorted(libsock.gethostbyname_ex("big.test")[2]) == sorted(f"198.18.1.{i}" for i in range(1, 41))
    with libsock.socket(libsock.AF_INET, libsock.SOCK_DGRAM) as sock:     # a name where an address goes
        sock.connect(("web.test", 53))
        assert sock.getpeername() == (HOST, 53)


def test_nxdomain_is_eai_noname_at_once(dnsmasq, dns_stack):
    started = time.monotonic()
    with pytest.raises(socket.gaierror) as caught:
        libsock.getaddrinfo("missing.test", 80)
    assert caught.value.errno == socket.EAI_NONAME
    assert time.monotonic() - started < TIMEOUT


def test_requests_reaches_a_server_by_name(dnsmasq, dns_stack, tmp_path):
    """requests, unchanged, under `netstack run` (libsock stands in for socket), fetches
    http://web.test:8000/ from a kernel-side http.server: the name resolves through dnsmasq
    over the stack's UDP."""
    (tmp_path / "hello.txt").write_text("hello from the kernel's side\n")
    server = popen(dns_stack.netns, sys.executable, "-m", "http.server", "--bind", HOST, "8000",
                   "--directory", str(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        program = ("import socket, requests; assert socket.__name__ == 'libsock'; "
                   "print(requests.get('http://web.test:8000/hello.txt', timeout=5).text, end='')")
        def fetch():
            result = subprocess.run([NETSTACK, "run", "--name", dns_stack.name, "--", sys.executable, "-c", program],
                                    capture_output=True, text=True, timeout=30)
            fetch.last = result.stderr[-2000:]
            return result.stdout if result.returncode == 0 else None
        try:      # (until http.server listens)
            assert wait_for(fetch, 20, 0.2, "requests to fetch by name") == "hello from the kernel's side\n"
        except AssertionError:
            raise AssertionError(fetch.last) from None
    finally:
        server.terminate()
        server.wait(5)


def _silent_dns(port: int, seconds: float) -> int:
    """A server that reads queries and never answers (no ICMP either): how many came."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, port))
        sock.settimeout(seconds)
        count = 0
        try:
            while True:
                sock.recv(512)
                count += 1
        except TimeoutError:
            return count


def test_a_silent_server_gives_eai_again_after_timeout_times_attempts(dns_stack, dnsmasq):
    dnsmasq.terminate()          # (the module's last test: nothing needs it after)
    dnsmasq.wait(5)
    silent = KernelProcess(dns_stack.netns, _silent_dns, 53, 3 * TIMEOUT * ATTEMPTS)
    try:
        wait_for(lambda: _bound(dns_stack, 53), 10, 0.05, "the silent server to bind")
        started = time.monotonic()
        with pytest.raises(socket.gaierror) as caught:
            libsock.gethostbyname("quiet.test")
        took = time.monotonic() - started
        assert caught.value.errno == socket.EAI_AGAIN
        assert TIMEOUT * ATTEMPTS <= took < TIMEOUT * ATTEMPTS + 1.0, took
        assert silent.result(10) == ATTEMPTS           # one query per attempt, each waited out
    finally:
        silent.kill()
