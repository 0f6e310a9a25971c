"""`netstack demo`: an instance of its own, an HTTP server on libsock, curl from
the kernel's side, the stack's view of it, and a clean teardown."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time

from deploy import control as ctl
from deploy import instance as inst
from deploy import ladder as lad

NAME = "demo"


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def run_demo() -> int:
    started = time.monotonic()
    inst.down(NAME, quiet=True)
    step("bringing up an instance: namespace netstack-demo, tun0, stack at 198.18.0.2")
    instance = inst.up(NAME, None, "tun0", "198.18.0.2/24", "198.18.0.1", 1500, None,
                       ["tcp.msl=0.5", "tcp.delayed_ack=0.04"])
    try:
        os.environ["NETSTACK_RUN"] = str(instance.run_dir)
        for row in inst.status(NAME):
            print(f"   {row['service']:7} pid {row['pid']:<7} incarnation {row['incarnation']}")
        step("ping from the kernel's side")
        print(_ns(instance, "ping", "-n", "-c", "3", "-i", "0.2", instance.addr).stdout.rstrip())

        from deploy.httpd import HttpServer
        step("an HTTP server written with libsock listens on 198.18.0.2:8080")
        server = HttpServer(port=8080, file_size=4 << 20).start()
        url = f"http://{instance.addr}:8080"
        step(f"curl {url}/  (from the kernel's side), traced by tcpd")
        since = ctl.control(instance.run_dir, "tcpd", "trace_start", lease=60)["next"]
        print(_ns(instance, "curl", "-sS", "--max-time", "20", url + "/").stdout.rstrip())
        events = _trace_until_closed(instance, since)
        step("the connection's ladder diagram (as the seed draws it)")
        segments, states = lad.events_from_trace(events)
        local = {tuple(e["src"] if e["dir"] == "out" else e["dst"]) for e in events if e["kind"] == "segment"}
        ladder = lad.build_ladder(segments, states, lad.select_connection(segments, ":8080"),
                                  source="traced by tcpd", local=local)
        print(lad.render_text(ladder), end="")
        svg = os.path.join(tempfile.gettempdir(), "netstack-demo-ladder.svg")
        with open(svg, "w") as out:
            out.write(lad.render_svg(ladder))
        print(f"   the same ladder as a picture: {svg} (open it in a browser)")
        step(f"curl {url}/file  (4 MiB)")
        with tempfile.TemporaryDirectory(prefix="netstack-demo-") as tmp:
            target = os.path.join(tmp, "file")
            summary = _ns(instance, "curl", "-sS", "--max-time", "60", "-o", target,
                          "-w", "%{size_download} bytes in %{time_total} s", url + "/file").stdout
            with open(target, "rb") as received:
                ok = hashlib.sha256(received.read()).hexdigest() == server.file_sha256
        print(f"   {summary.strip()}; sha256 {'matches' if ok else 'DIFFERS'}")
        step("netstack ss -a")
        subprocess.run([sys.executable, "-m", "deploy.cli", "ss", "-a", "--name", NAME])
        step("netstack stats")
        subprocess.run([sys.executable, "-m", "deploy.cli", "stats", "--name", NAME])
        server.close()
        if not ok:
            print("the file arrived damaged", file=sys.stderr)
            return 1
    finally:
        step("tearing down")
        inst.down(NAME)
        print(f"   done in {time.monotonic() - started:.1f} s; nothing left behind")
    return 0


def _trace_until_closed(instance, since: int) -> list[dict]:
    """tcpd's trace events from `since` until the traced connection has closed on our side."""
    events: list[dict] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        reply = ctl.control(instance.run_dir, "tcpd", "trace", since=since, lease=60)
        events.extend(reply["events"])
        since = reply["next"]
        if any(e["kind"] == "state" and e.get("to") == "CLOSED" for e in events):
            break
        time.sleep(0.05)
    ctl.control(instance.run_dir, "tcpd", "trace_stop")
    return events


def _ns(instance, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", instance.netns, *cmd], capture_output=True, text=True,
                          timeout=60)
