"""Event-driven programs, unchanged, on the stack: `netstack run` makes libsock stand in for
`socket`; asyncio, socketserver and a kernel peer in the instance's namespace check every byte."""
from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time

from pathlib import Path

from tests.e2e import netns
from tests.e2e.conftest import NETSTACK, wait_for

PROJECT = Path(__file__).resolve().parents[2]

ECHO_SERVER = """
import asyncio, socket, sys
assert socket.__name__ == "libsock", socket
async def handle(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()
async def main():
    server = await asyncio.start_server(handle, "0.0.0.0", int(sys.argv[1]), backlog=512)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""

KERNEL_CLIENTS = """
import asyncio, hashlib, sys
count, port = int(sys.argv[1]), int(sys.argv[2])
async def one(i):
    reader, writer = await asyncio.open_connection("198.18.0.2", port)
    echoed = 0
    for k in range(4):
        message = hashlib.sha256(b"%d.%d" % (i, k)).digest() * (1 + (i * 31 + k) % 200)
        writer.write(message)
        await writer.drain()
        assert await reader.readexactly(len(message)) == message, (i, k)
        echoed += 1
    writer.close()
    await writer.wait_closed()
    return echoed
async def main():
    print(sum(await asyncio.gather(*(one(i) for i in range(count)))))
asyncio.run(main())
"""

KERNEL_SERVER = """
import asyncio, hashlib, ssl, sys
context = None
if len(sys.argv) > 2:                   # certificate and key: TLS
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(sys.argv[2], sys.argv[3])
async def handle(reader, writer):
    size = int((await reader.readline()).decode())
    body = hashlib.sha256(str(size).encode()).digest() * (size // 32)
    writer.write(body)
    await writer.drain()
    writer.close()
async def main():
    server = await asyncio.start_server(handle, "198.18.0.1", int(sys.argv[1]), backlog=512, ssl=context)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""

CLIENTS = """
import asyncio, errno, hashlib, socket, sys
assert socket.__name__ == "libsock"
count, port = int(sys.argv[1]), int(sys.argv[2])
async def one(i):
    size = 32 * (1 + i % 500)
    reader, writer = await asyncio.open_connection("198.18.0.1", port)
    writer.write(b"%d\\n" % size)
    body = await reader.read()          # to EOF
    writer.close()
    return hashlib.sha256(body).hexdigest() == hashlib.sha256(
        hashlib.sha256(str(size).encode()).digest() * (size // 32)).hexdigest()
async def refused():
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("198.18.0.1", port + 1))
    except ConnectionRefusedError:
        return True
    finally:
        sock.close()
    return False
async def main():
    results = await asyncio.gather(*(one(i) for i in range(count)))
    print(sum(results), await refused())
asyncio.run(main())
"""

SOCKETSERVER = """
import socketserver, sys, threading, time
class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(self.request.recv(100).upper())
server = socketserver.TCPServer(("0.0.0.0", int(sys.argv[1])), Handler)
server.timeout = 0.3
started = time.monotonic()
server.handle_request()                  # nobody connects: handle_timeout after 0.3 s
waited = time.monotonic() - started
assert 0.29 <= waited < 1.0, waited
thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2})
thread.start()
print("listening", flush=True)
sys.stdin.readline()                     # the test says when
started = time.monotonic()
server.shutdown()                        # returns within one poll interval, not at the next connection
took = time.monotonic() - started
thread.join()
server.server_close()
print(f"shutdown {took:.3f}", flush=True)
sys.exit(3)
"""


def _certificate(tmp_path, address: str = "198.18.0.1") -> tuple[str, str]:
    cert, key = str(tmp_path / f"cert-{address}.pem"), str(tmp_path / f"key-{address}.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout", key,
                    "-out", cert, "-subj", f"/CN={address}", "-addext", f"subjectAltName=IP:{address}"],
                   check=True, capture_output=True)
    return cert, key


def _program(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


@contextlib.contextmanager
def _kernel_server(stack, program: str, *args: str):
    """A Python program in the instance's namespace (Python's socket: the kernel), once it listens."""
    server = netns.popen(stack.netns, sys.executable, "-c", program, *args, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "listening"
        yield server
    finally:
        server.kill()
        server.wait()


def _run(stack, tmp_path, name: str, program: str, *args: str) -> str:
    """An unchanged program under netstack run, to its end: its stdout (its exit status 0)."""
    path = _program(tmp_path, name, program)
    result = subprocess.run([NETSTACK, "run", "--name", stack.name, "--", sys.executable, path, *args],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _start(stack, *argv: str, **kwargs) -> subprocess.Popen:
    proc = subprocess.Popen([NETSTACK, "run", "--name", stack.name, "--", *argv], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)
    line = proc.stdout.readline()
    assert line.strip() == "listening", proc.stderr.read()
    return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_asyncio_streams_echo_server_with_many_kernel_clients(shared_stack, tmp_path):
    server = _start(shared_stack, sys.executable, _program(tmp_path, "echo.py", ECHO_SERVER), "7001")
    try:
        result = netns.run(shared_stack.netns, sys.executable, "-c", KERNEL_CLIENTS, "200", "7001", timeout=120)
        assert result.stdout.strip() == str(200 * 4), result.stderr     # every echo, byte for byte
    finally:
        _stop(server)


def test_asyncio_clients_against_a_kernel_asyncio_server(shared_stack, tmp_path):
    with _kernel_server(shared_stack, KERNEL_SERVER, "7002"):
        out = _run(shared_stack, tmp_path, "clients.py", CLIENTS, "100", "7002")
        assert out.split() == ["100", "True"]                # every body's sha256; refused -> ECONNREFUSED


def test_socketserver_timeouts_shutdown_within_a_poll_interval_and_the_exit_status(shared_stack, tmp_path):
    server = _start(shared_stack, sys.executable, _program(tmp_path, "ss.py", SOCKETSERVER), "7003",
                    stdin=subprocess.PIPE)
    try:
        reply = netns.run(shared_stack.netns, sys.executable, "-c",
                          "import socket; s = socket.create_connection(('198.18.0.2', 7003)); "
                          "s.sendall(b'abc'); print(s.recv(10).decode())")
        assert reply.stdout.strip() == "ABC"
        server.stdin.write("go\n")
        server.stdin.flush()                                  # stdin reaches the program
        out, err = server.communicate(timeout=10)
        assert server.returncode == 3, err                    # the program's own status
        took = float(out.split()[-1])
        assert took < 0.2 + 0.15, out                         # one poll interval (0.2 s), not forever
    finally:
        _stop(server)


def test_libsock_run_module_form(shared_stack, tmp_path):
    (tmp_path / "probe_mod.py").write_text("import socket, sys\nprint(socket.__name__, sys.argv[1:])\n")
    result = subprocess.run([sys.executable, "-m", "libsock.run", "-m", "probe_mod", "a", "b"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=30,
                            env={**os.environ, "NETSTACK_RUN": shared_stack.run_dir,
                                 "PYTHONPATH": str(PROJECT)})
    assert result.stdout.strip() == "libsock ['a', 'b']", result.stderr


def test_run_without_an_instance_is_one_line():
    result = subprocess.run([NETSTACK, "run", "--name", "t-no-such-instance", "--", sys.executable, "-c", "1"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1 and "not running" in result.stderr


TLS_CLIENTS = """
import asyncio, hashlib, socket, ssl, sys
assert socket.__name__ == "libsock"
context = ssl.create_default_context(cafile=sys.argv[2])
async def one(i):
    size = 32 * (1000 + i * 997)
    reader, writer = await asyncio.open_connection("198.18.0.1", int(sys.argv[1]), ssl=context)
    writer.write(b"%d\\n" % size)
    body = await reader.read()
    writer.close()
    return body == hashlib.sha256(str(size).encode()).digest() * (size // 32)
async def main():
    print(sum(await asyncio.gather(*(one(i) for i in range(10)))))
asyncio.run(main())
"""


def test_asyncio_tls_client_over_the_readiness_descriptor(shared_stack, tmp_path):
    cert, key = _certificate(tmp_path)
    with _kernel_server(shared_stack, KERNEL_SERVER, "7004", cert, key):
        out = _run(shared_stack, tmp_path, "tls_clients.py", TLS_CLIENTS, "7004", cert)
        assert out.strip() == "10"                           # every body verified, over TLS


def test_asyncio_sock_api_on_a_libsock_listener_in_process(shared_stack):
    """loop.sock_accept / sock_recv / sock_sendall on libsock sockets (no module swap needed:
    they take the socket object), a kernel client in the namespace."""
    import asyncio

    import libsock

    async def serve():
        loop = asyncio.get_running_loop()
        listener = libsock.create_server(("0.0.0.0", 7005))
        listener.setblocking(False)
        client = netns.popen(shared_stack.netns, sys.executable, "-c",
                             "import socket, hashlib; s = socket.create_connection(('198.18.0.2', 7005)); "
                             "data = bytes(range(256)) * 8192; s.sendall(data); s.shutdown(socket.SHUT_WR); "
                             "got = b''\nwhile chunk := s.recv(65536): got += chunk\n"
                             "print(got == data[::-1])", stdout=subprocess.PIPE, text=True)
        conn, _ = await asyncio.wait_for(loop.sock_accept(listener), 30)
        conn.setblocking(False)
        received = bytearray()
        while chunk := await asyncio.wait_for(loop.sock_recv(conn, 65536), 30):
            received += chunk
        await loop.sock_sendall(conn, bytes(received[::-1]))     # 2 MiB: partial sends, writability
        conn.close()
        listener.close()
        out, _ = await loop.run_in_executor(None, client.communicate)
        return len(received), out.strip()

    assert asyncio.run(serve()) == (256 * 8192, "True")


HTTPS_SERVER = """
import hashlib, http.server, ssl, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        size = int(self.path.strip("/"))
        body = hashlib.sha256(str(size).encode()).digest() * (size // 32)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("198.18.0.1", int(sys.argv[1])), Handler)
context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(sys.argv[2], sys.argv[3])
server.socket = context.wrap_socket(server.socket, server_side=True)
print("listening", flush=True)
server.serve_forever()
"""

HTTPS_CLIENT = """
import hashlib, socket, ssl, sys, urllib.request
assert socket.__name__ == "libsock"
context = ssl.create_default_context(cafile=sys.argv[2])
ok = 0
for size in (32, 32 * 1000, 32 * 100000):
    with urllib.request.urlopen(f"https://198.18.0.1:{sys.argv[1]}/{size}", context=context, timeout=30) as r:
        ok += r.read() == hashlib.sha256(str(size).encode()).digest() * (size // 32)
print(ok)
"""




def test_urllib_https_through_wrap_socket_on_libsock(shared_stack, tmp_path):
    cert, key = _certificate(tmp_path)
    with _kernel_server(shared_stack, HTTPS_SERVER, "7006", cert, key):
        out = _run(shared_stack, tmp_path, "https_client.py", HTTPS_CLIENT, "7006", cert)
        assert out.strip() == "3"                            # three bodies, up to 3.2 MB, verified


def test_an_https_server_on_libsock_serves_curl(shared_stack, tmp_path):
    """The same http.server program with wrap_socket(server_side=True), under netstack run."""
    cert, key = _certificate(tmp_path, "198.18.0.2")
    program = HTTPS_SERVER.replace('"198.18.0.1"', '"0.0.0.0"')
    server = _start(shared_stack, sys.executable, _program(tmp_path, "https_server.py", program), "7007", cert, key)
    try:
        size = 32 * 50000
        result = subprocess.run(["ip", "netns", "exec", shared_stack.netns, "curl", "-sS", "--cacert", cert,
                                 f"https://198.18.0.2:7007/{size}"], capture_output=True, timeout=60)
        assert result.returncode == 0, result.stderr
        body = result.stdout
        expected = hashlib.sha256(hashlib.sha256(str(size).encode()).digest() * (size // 32)).hexdigest()
        assert hashlib.sha256(body).hexdigest() == expected
    finally:
        _stop(server)


def test_run_passes_signals_to_the_program(shared_stack, tmp_path):
    program = _program(tmp_path, "signals.py", """
        import signal, socket, sys, time
        assert socket.__name__ == "libsock"
        signal.signal(signal.SIGTERM, lambda *_: (print("terminated", flush=True), sys.exit(5)))
        print("listening", flush=True)
        time.sleep(60)
        """)
    proc = _start(shared_stack, sys.executable, program)
    proc.send_signal(signal.SIGTERM)                          # to netstack run's pid: the program's
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 5 and out.strip() == "terminated", err
