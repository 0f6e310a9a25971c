"""Popular event-driven libraries, unchanged, under `netstack run`, with kernel peers in the
instance's namespace; every body and message is checked, not only exit codes."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys

import pytest

from tests.e2e import netns
from tests.e2e.conftest import NETSTACK, wait_for
from tests.e2e.test_evloop import HTTPS_SERVER, _certificate, _kernel_server, _program, _run, _start, _stop

for _library in ("aiohttp", "uvicorn", "websockets", "requests", "httpx"):
    pytest.importorskip(_library)


def _body(size: int) -> bytes:
    return hashlib.sha256(str(size).encode()).digest() * (size // 32)


def _curl_sha256(stack, url: str) -> str:
    result = subprocess.run(["ip", "netns", "exec", stack.netns, "curl", "-sS", url], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return hashlib.sha256(result.stdout).hexdigest()


AIOHTTP_SERVER = """
import hashlib, sys
from aiohttp import web
async def handle(request):
    size = int(request.match_info["size"])
    return web.Response(body=hashlib.sha256(str(size).encode()).digest() * (size // 32))
app = web.Application()
app.router.add_get("/{size}", handle)
web.run_app(app, host="0.0.0.0", port=int(sys.argv[1]), print=lambda *a: print("listening", flush=True))
"""

UVICORN_APP = """
import hashlib
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    size = int(scope["path"].strip("/"))
    body = hashlib.sha256(str(size).encode()).digest() * (size // 32)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
"""

WEBSOCKETS_SERVER = """
import asyncio, sys
from websockets.asyncio.server import serve
async def echo(ws):
    async for message in ws:
        await ws.send(message[::-1])
async def main():
    async with serve(echo, "0.0.0.0", int(sys.argv[1])):
        print("listening", flush=True)
        await asyncio.Future()
asyncio.run(main())
"""

WEBSOCKETS_KERNEL_CLIENTS = """
import asyncio, os, sys
from websockets.asyncio.client import connect
async def one(i):
    async with connect(f"ws://198.18.0.2:{sys.argv[1]}") as ws:
        for k in range(5):
            message = os.urandom(10 + (i * 997 + k) % 20000)
            await ws.send(message)
            assert await ws.recv() == message[::-1]
    return 5
async def main():
    print(sum(await asyncio.gather(*(one(i) for i in range(20)))))
asyncio.run(main())
"""

CLIENTS = """
import asyncio, hashlib, socket, sys
import aiohttp, httpx, requests
assert socket.__name__ == "libsock"
port, tls_port, cert = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def body(size):
    return hashlib.sha256(str(size).encode()).digest() * (size // 32)
async def fetch_all():
    async with aiohttp.ClientSession() as session:
        async def one(size):
            async with session.get(f"http://198.18.0.1:{port}/{size}") as response:
                return await response.read() == body(size)
        return sum(await asyncio.gather(*(one(32 * (1 + i * 1000)) for i in range(20))))
print("aiohttp", asyncio.run(fetch_all()))
with requests.Session() as session:
    ok = sum(session.get(f"https://198.18.0.1:{tls_port}/{size}", verify=cert, timeout=30).content == body(size)
             for size in (32, 32 * 1000, 32 * 100000))
print("requests", ok)
with httpx.Client(verify=cert) as client:                 # sync: ssl wrap_socket; plain: create_connection
    ok = sum(client.get(f"{scheme}://198.18.0.1:{p}/{size}").content == body(size)
             for scheme, p in (("http", port), ("https", tls_port)) for size in (32, 32 * 100000))
print("httpx", ok)
async def httpx_async():                                  # asyncio: ssl= over the readiness descriptor
    async with httpx.AsyncClient(verify=cert) as client:
        got = await asyncio.gather(*(client.get(f"https://198.18.0.1:{tls_port}/{32 * (1 + i * 997)}")
                                     for i in range(10)))
        return sum(r.content == body(32 * (1 + i * 997)) for i, r in enumerate(got))
print("httpx-async", asyncio.run(httpx_async()))
"""


def test_aiohttp_and_uvicorn_servers_serve_curl(shared_stack, tmp_path):
    aio = _start(shared_stack, sys.executable, _program(tmp_path, "aio.py", AIOHTTP_SERVER), "7201")
    try:
        for size in (32, 3_200_000):
            assert _curl_sha256(shared_stack, f"http://198.18.0.2:7201/{size}") == hashlib.sha256(_body(size)).hexdigest()
    finally:
        _stop(aio)
    _program(tmp_path, "asgi_app.py", UVICORN_APP)
    uv = subprocess.Popen([NETSTACK, "run", "--name", shared_stack.name, "--", sys.executable, "-m", "uvicorn",
                           "asgi_app:app", "--host", "0.0.0.0", "--port", "7202"], cwd=tmp_path, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for line in uv.stderr:                                # uvicorn logs on stderr
            if "Uvicorn running" in line:
                break
        for size in (32, 320_000):
            assert _curl_sha256(shared_stack, f"http://198.18.0.2:7202/{size}") == hashlib.sha256(_body(size)).hexdigest()
    finally:
        _stop(uv)


def test_websockets_server_with_kernel_clients(shared_stack, tmp_path):
    server = _start(shared_stack, sys.executable, _program(tmp_path, "ws.py", WEBSOCKETS_SERVER), "7203")
    try:
        result = netns.run(shared_stack.netns, sys.executable, "-c", WEBSOCKETS_KERNEL_CLIENTS, "7203", timeout=120)
        assert result.stdout.strip() == "100", result.stderr        # every message of 20 clients
    finally:
        _stop(server)


def test_aiohttp_client_and_requests_https(shared_stack, tmp_path):
    cert, key = _certificate(tmp_path)
    plain_server = HTTPS_SERVER.replace("server.socket = context.wrap_socket(server.socket, server_side=True)", "")
    with _kernel_server(shared_stack, plain_server, "7204", cert, key), \
            _kernel_server(shared_stack, HTTPS_SERVER, "7205", cert, key):
        out = _run(shared_stack, tmp_path, "clients.py", CLIENTS, "7204", "7205", cert)
        assert out.split() == ["aiohttp", "20", "requests", "3", "httpx", "4", "httpx-async", "10"]


REDIS_AND_MQTT = """
import hashlib, os, queue, socket, sys, time
import redis
import paho.mqtt.client as mqtt
assert socket.__name__ == "libsock"
r = redis.Redis(host="198.18.0.1", port=int(sys.argv[1]), socket_timeout=10)
values = {f"k{i}": os.urandom(1 + i * 37) for i in range(100)}
for key, value in values.items():
    r.set(key, value)
pipe = r.pipeline()
for _ in range(500):
    pipe.incr("counter")
pipe.execute()
print("redis", sum(r.get(key) == value for key, value in values.items()), int(r.get("counter")))

got = queue.Queue()
client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
client.on_connect = lambda c, userdata, flags, reason, props: c.subscribe("t/echo", qos=1)
client.on_subscribe = lambda c, userdata, mid, reasons, props: got.put("subscribed")
client.on_message = lambda c, userdata, message: got.put(message.payload)
client.connect("198.18.0.1", int(sys.argv[2]))
client.loop_start()                      # paho's own thread: select() over the socket and a pipe
assert got.get(timeout=10) == "subscribed"
sent = [hashlib.sha256(b"%d" % i).digest() * (1 + i) for i in range(20)]
for payload in sent:
    client.publish("t/echo", payload, qos=1)
received = [got.get(timeout=10) for _ in sent]
client.loop_stop()
client.disconnect()
print("mqtt", sum(a == b for a, b in zip(received, sent)))
"""


def test_redis_py_and_paho_mqtt_against_debian_servers(shared_stack, tmp_path):
    for program in ("redis-server", "mosquitto"):
        if shutil.which(program) is None:
            pytest.skip(f"{program} not installed (make install's DEBS)")
    redis_server = netns.popen(shared_stack.netns, "redis-server", "--port", "7301", "--bind", "198.18.0.1",
                               "--save", "", "--appendonly", "no", "--protected-mode", "no",
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = tmp_path / "mosquitto.conf"            # (2.x with no listener serves localhost only)
    config.write_text("listener 7302 198.18.0.1\nallow_anonymous true\n")
    broker = netns.popen(shared_stack.netns, "mosquitto", "-c", str(config), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        for port in (7301, 7302):
            wait_for(lambda: netns.run(shared_stack.netns, sys.executable, "-c",
                                       f"import socket; socket.create_connection(('198.18.0.1', {port}), 1)",
                                       check=False).returncode == 0, 10, 0.1, f"port {port}")
        out = _run(shared_stack, tmp_path, "redis_mqtt.py", REDIS_AND_MQTT, "7301", "7302")
        assert out.split() == ["redis", "100", "500", "mqtt", "20"]
    finally:
        for proc in (redis_server, broker):
            proc.kill()
            proc.wait()
