"""Real processes in their own namespace: every fixture deletes what it made, even on failure."""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

NETSTACK = str(Path(sys.executable).with_name("netstack"))
_counter = itertools.count()

# the suite opens thousands of descriptors in one process over its run (ZeroMQ channels, kernel-side
# sockets of forked helpers that inherit them; the 2,000-connection test alone needs 2,000): the soft
# limit of 1024 made it fail with EMFILE late in a full run
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _hard == resource.RLIM_INFINITY or _hard > _soft:
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(_hard, 65536) if _hard != resource.RLIM_INFINITY else 65536,
                                                _hard))

if os.geteuid() != 0 or not os.path.exists("/dev/net/tun"):
    pytest.skip("end-to-end tests need root and /dev/net/tun", allow_module_level=True)

# short timers for every e2e instance unless a test asks for others
FAST = ["tcp.msl=0.5", "tcp.fin_wait2_timeout=2", "tcp.rto_min=0.2", "tcp.rto_initial=0.5",
        "tcp.delayed_ack=0.04"]


def netstack(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    result = subprocess.run([NETSTACK, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"netstack {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def wait_for(condition, timeout: float, interval: float = 0.01, message: str = "condition"):
    """Poll condition() until it returns something truthy; fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def log_tracebacks(run_dir: str) -> dict[str, list[str]]:
    """Every traceback in an instance's service logs, as its last frame and exception, by log."""
    found = {}
    for log in Path(run_dir).rglob("*.log"):
        lines = log.read_text(errors="replace").splitlines()
        errors = [" | ".join(lines[i - 2:i + 1]) for i, line in enumerate(lines)
                  if i >= 2 and line[:1].isalpha() and "Error" in line.split(":")[0] and lines[i - 1].startswith(" ")]
        if errors:
            found[log.name] = sorted(set(errors))
    return found


def connect_or_none(address, timeout: float = 10, retry_on=(ConnectionRefusedError,)):
    """A libsock connection to address, or None while the server is not listening yet
    (for wait_for: the kernel-side server starts in a process of its own)."""
    import libsock
    try:
        return libsock.create_connection(address, timeout=timeout)
    except retry_on:
        return None


@dataclass
class Stack:
    name: str
    netns: str
    run_dir: str
    addr: str = "198.18.0.2"
    host: str = "198.18.0.1"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return netstack(*args, "--name", self.name, check=check)

    def status(self) -> dict:
        return {row["service"]: row for row in json.loads(self.cli("status", "--json", check=False).stdout)}

    def stats(self) -> dict:
        return json.loads(self.cli("stats", "--json").stdout)

    def ss(self) -> list:
        return json.loads(self.cli("ss", "-a", "--json").stdout)


def start_stack(*extra: str, settings: list[str] = ()) -> Stack:
    name = f"t{os.getpid() % 100000}x{next(_counter)}"
    args = ["up", "--name", name]
    for setting in [*FAST, *settings]:
        args += ["--set", setting]
    try:
        result = netstack(*args, *extra)
    except BaseException:
        netstack("down", "--name", name, check=False)
        raise
    run_dir = result.stdout.strip().splitlines()[-1].split("=", 1)[1]
    return Stack(name=name, netns=f"netstack-{name}", run_dir=run_dir)


def stop_stack(stack: Stack) -> None:
    netstack("down", "--name", stack.name, check=False)


@contextlib.contextmanager
def running_stack(*extra: str, settings: list[str] = ()):
    """An instance for the duration of the block, found by libsock through NETSTACK_RUN."""
    s = start_stack(*extra, settings=settings)
    old = os.environ.get("NETSTACK_RUN")
    os.environ["NETSTACK_RUN"] = s.run_dir
    try:
        yield s
    finally:
        if old is None:
            os.environ.pop("NETSTACK_RUN", None)
        else:
            os.environ["NETSTACK_RUN"] = old
        stop_stack(s)


@pytest.fixture
def stack():
    """A fresh instance for one test."""
    with running_stack() as s:
        yield s


@pytest.fixture(scope="module")
def shared_stack():
    """One instance for a whole module of tests that do not disturb it."""
    with running_stack() as s:
        yield s


def start_cli(stack, *args: str) -> subprocess.Popen:
    """A long-running netstack command, once it has said it started (on stderr)."""
    proc = subprocess.Popen([NETSTACK, *args, "--name", stack.name], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    first = proc.stderr.readline()
    assert proc.poll() is None, f"netstack {' '.join(args)} ended at once: {first}{proc.stderr.read()}"
    return proc


def interrupt(proc: subprocess.Popen) -> tuple[str, str]:
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    return out, err
