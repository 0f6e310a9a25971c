"""Fault scenarios: kill a service while traffic runs, and check that nothing is lost.

Used twice: briefly in `make test` (tests/e2e/test_faults_short.py) and at full
size in the fault suite (`make faults`, tests/faults/).  Each scenario returns a
report row per kill or signal:

- `started_s`: the signal until the new incarnation recorded its start (supervisord's
  restart and the interpreter's start-up);
- `back_s`: the signal until the service's new incarnation answers a control request;
- `recovery_s`: the signal until the first packet gets through again: an ICMP echo
  sent after the kill is answered (nicd, ipd; for SIGSTOP, after the SIGCONT),
  tcpd has re-armed its timers in the new timerd (timerd), a new connection is
  established (tcpd);
- `bytes_lost`: bytes of the scenario's transfers that did not arrive intact;
- `connections_reset`: connections of the scenario that ended with a reset.

Every time is measured in this process from the moment the old process is gone
(watched every 0.5 ms), not from the start of the `netstack kill` command.
"""
from __future__ import annotations

import hashlib
import multiprocessing
import os
import queue
import random
import select
import socket as std_socket
import struct
import threading
import time
from pathlib import Path

import libsock
from deploy import control as ctl
from deploy.instance import pid_alive
from tests.e2e import netns as ns
from tests.e2e import peers
from tests.e2e.conftest import FAST, wait_for

MiB = 1 << 20
FAULT_SERVICES = ("nicd", "ipd", "timerd", "tcpd")


# -- measuring ---------------------------------------------------------------------

def _current(stack, service: str) -> tuple[str, int]:
    """(incarnation, pid) of the service's newest start."""
    last = (Path(stack.run_dir) / "incarnations" / service).read_text().split()[-3:]
    return last[0], int(last[1])


def _answers(stack, service: str, incarnation: str) -> bool:
    """The service's new incarnation answers (asked once it has bound its socket)."""
    if _current(stack, service)[0] == incarnation:
        return False
    try:
        return ctl.control(stack.run_dir, service, "status", timeout=0.05)["incarnation"] != incarnation
    except ctl.ControlError:
        return False


class Pinger:
    """ICMP echo to the stack from a thread inside its namespace (setns moves only
    the calling thread): when does a packet get through again?"""

    INTERVAL = 0.005

    def __init__(self, stack):
        self.addr = stack.addr
        self.requests: queue.Queue = queue.Queue()
        self.ident = random.randrange(1, 0xFFFF)
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(stack.netns, ready), daemon=True)
        self.thread.start()
        ready.wait(5)

    def start(self, timeout: float = 10.0) -> queue.Queue:
        """Ping every INTERVAL from now on; the queue gets the monotonic time of the first answer (or None)."""
        answer: queue.Queue = queue.Queue()
        self.requests.put((timeout, answer))
        return answer

    def close(self) -> None:
        self.requests.put(None)
        self.thread.join(5)

    @staticmethod
    def _checksum(data: bytes) -> int:
        total = sum(struct.unpack(f"!{len(data) // 2}H", data))
        total = (total >> 16) + (total & 0xFFFF)
        return ~(total + (total >> 16)) & 0xFFFF

    def _run(self, netns: str, ready: threading.Event) -> None:
        ns.enter_netns(netns)
        sock = std_socket.socket(std_socket.AF_INET, std_socket.SOCK_RAW, std_socket.IPPROTO_ICMP)
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        ready.set()
        seq = 0
        with sock:
            while (request := self.requests.get()) is not None:
                timeout, answer = request
                first_seq = (seq + 1) & 0xFFFF
                deadline = time.monotonic() + timeout
                got = None
                while got is None and time.monotonic() < deadline:
                    seq = (seq + 1) & 0xFFFF
                    header = struct.pack("!BBHHH", 8, 0, 0, self.ident, seq) + b"netstack-fault"
                    packet = header[:2] + struct.pack("!H", self._checksum(header)) + header[4:]
                    sock.sendto(packet, (self.addr, 0))
                    until = time.monotonic() + self.INTERVAL
                    while got is None and (left := until - time.monotonic()) > 0:
                        if not poller.poll(left * 1000):      # (poll: select fails past fd 1023)
                            break
                        reply = sock.recv(2048)
                        icmp = reply[(reply[0] & 0x0F) * 4:]
                        if len(icmp) < 8:               # not an echo reply of ours (and never a dead pinger)
                            continue
                        kind, _, _, ident, rseq = struct.unpack("!BBHHH", icmp[:8])
                        if kind == 0 and ident == self.ident and (rseq - first_seq) & 0xFFFF < 0x8000:
                            got = time.monotonic()
                answer.put(got)


def kill_and_measure(stack, service: str, pinger: Pinger, signal: str = "KILL") -> dict:
    """Signal a service under traffic and measure its recovery (one report row)."""
    rearms = ctl.control(stack.run_dir, "tcpd", "stats").get("timer_rearms", 0) if service == "timerd" else 0
    killed, killed_wall, incarnation, _ = _kill_timed(stack, service, signal)
    first_packet = pinger.start()
    back = wait_for(lambda: _answers(stack, service, incarnation) and time.monotonic(), 5, 0.001,
                    f"{service} to answer again")
    reply = first_packet.get(timeout=30)
    assert reply is not None, f"no ICMP echo got through after the {service} kill"
    if service == "timerd":        # its packets are timers: tcpd re-armed its timers in the new timerd
        recovered = wait_for(lambda: ctl.control(stack.run_dir, "tcpd", "stats").get("timer_rearms", 0) > rearms
                             and time.monotonic(), 5, 0.001, "tcpd to re-arm its timers")
    else:
        recovered = reply
    started = float((Path(stack.run_dir) / "incarnations" / service).read_text().split()[-1])
    return {"service": service, "signal": signal, "started_s": round(started - killed_wall, 4),
            "back_s": round(back - killed, 4), "recovery_s": round(recovered - killed, 4)}


def _kill_timed(stack, service: str, signal: str) -> tuple[float, float, str, int]:
    """`netstack kill SERVICE --signal SIGNAL`: (monotonic and wall-clock moment it took effect,
    old incarnation, old pid).  A SIGKILL or SIGTERM takes effect when the old process is gone,
    watched every 0.5 ms from a thread while the command runs; another signal, by the time
    the command returns."""
    incarnation, pid = _current(stack, service)
    gone: list[float] = []

    def watch():
        while pid_alive(pid):
            time.sleep(0.0005)
        gone.append((time.monotonic(), time.time()))

    watcher = None
    if signal in ("KILL", "TERM"):
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
    stack.cli("kill", service, "--signal", signal)
    if watcher is not None:
        watcher.join(5)
        return *gone[0], incarnation, pid
    return time.monotonic(), time.time(), incarnation, pid


# -- show 1: bulk transfers each way survive kills ------------------------------------

def _connect(host, port, timeout=30):
    try:
        return libsock.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError:
        return None


def _is_reset(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc} {exc.__cause__!r}"
    return "ConnectionReset" in text or "ECONNRESET" in text or "reset by peer" in text


PACE_CHUNK = 256 * 1024


def _paced_sendall(sendall, data: bytes, seconds: float) -> None:
    """sendall in chunks spread over at least `seconds` (0: at once)."""
    if not seconds:
        sendall(data)
        return
    start = time.monotonic()
    for offset in range(0, len(data), PACE_CHUNK):
        due = start + seconds * offset / len(data)
        if (wait := due - time.monotonic()) > 0:
            time.sleep(wait)
        sendall(data[offset:offset + PACE_CHUNK])


def _kernel_send_file(host: str, port: int, size: int, seconds: float) -> str:
    """peers.send_file, paced over at least `seconds`."""
    data = peers.pattern(size)
    with std_socket.create_connection((host, port), timeout=120) as sock:
        _paced_sendall(sock.sendall, data, seconds)
    return hashlib.sha256(data).hexdigest()


class Transfers:
    """A transfer each way between the kernel and libsock; `finish()` checks them.

    With `seconds`, both senders spread their bytes over at least that long, so the
    kills of a scenario land inside the transfers however fast the stack runs."""

    def __init__(self, stack, size: int, port: int, seconds: float = 0.0):
        self.stack, self.size, self.seconds = stack, size, seconds
        self.listener = libsock.create_server(("0.0.0.0", port))
        self.inbound: dict = {}
        self.outbound: dict = {}
        self.receiver = threading.Thread(target=self._receive, daemon=True)
        self.receiver.start()
        self.kernel_sender = ns.KernelProcess(stack.netns, _kernel_send_file, stack.addr, port, size, seconds)
        self.kernel_receiver = ns.KernelProcess(stack.netns, peers.receive_file, stack.host, port + 1)
        self.data = peers.pattern(size)
        self.sender = threading.Thread(target=self._send, args=(port + 1,), daemon=True)
        self.sender.start()

    def _receive(self):
        try:
            conn, _ = self.listener.accept()
            with conn:
                digest, total = hashlib.sha256(), 0
                while data := conn.recv(MiB):
                    digest.update(data)
                    total += len(data)
                    self.inbound["progress"] = total
            self.inbound["result"] = (total, digest.hexdigest())
        except Exception as exc:
            self.inbound["error"] = exc

    def _send(self, port):
        try:
            sock = wait_for(lambda: _connect(self.stack.host, port), 10, 0.05, "the kernel receiver")
            with sock:
                _paced_sendall(sock.sendall, self.data, self.seconds)
            self.outbound["sent"] = True
        except Exception as exc:
            self.outbound["error"] = exc

    def progress(self) -> int:
        return self.inbound.get("progress", 0)

    def finish(self, timeout: float | None = None) -> dict:
        """Wait for both (at most `timeout`, by default 60 s plus 1 s per MiB: a stalled
        transfer fails with the stack's view of its connections, it does not hang the suite);
        {'bytes_lost', 'connections_reset'}; AssertionError if damaged."""
        deadline = time.monotonic() + (timeout if timeout is not None else 60 + self.size / MiB)
        left = lambda: max(0.1, deadline - time.monotonic())      # noqa: E731
        errors = []
        self.sender.join(left())
        self.receiver.join(left())
        try:
            sent_digest = self.kernel_sender.result(left())
        except Exception as exc:
            sent_digest, _ = None, errors.append(exc)
        try:
            got_out = self.kernel_receiver.result(left())
        except Exception as exc:
            got_out, _ = (0, None), errors.append(exc)
        stalled = self.sender.is_alive() or self.receiver.is_alive()
        diagnosis = diagnose(self.stack) if stalled or errors else ""
        self.listener.close()
        errors += [side["error"] for side in (self.inbound, self.outbound) if "error" in side]
        got_in = self.inbound.get("result", (self.progress(), None))
        lost = (self.size - got_in[0] if got_in[1] == sent_digest else self.size) + \
               (self.size - got_out[0] if got_out[1] == hashlib.sha256(self.data).hexdigest() else self.size)
        result = {"bytes_lost": lost, "connections_reset": sum(map(_is_reset, errors))}
        assert not stalled, f"a transfer stalled ({self.progress()} of {self.size} bytes in): {diagnosis}"
        assert not errors, (result, errors, diagnosis)
        assert got_in == (self.size, sent_digest), "kernel -> libsock transfer damaged"
        assert lost == 0, result
        return result


def diagnose(stack) -> str:
    """The stack's connections and its non-zero drop and error counters, for a failure message."""
    try:
        conns = [{k: c.get(k) for k in ("state", "local", "remote", "send_q", "recv_q", "snd_wnd", "cwnd",
                                         "retransmissions", "timers")} for c in stack.ss()]
        stats = stack.stats()
        counters = {service: {k: v for k, v in values.items() if v and ("drop" in k or "err" in k)}
                    for service, values in stats.items() if isinstance(values, dict)}
        return f"connections {conns}; counters {counters}"
    except Exception as exc:          # the diagnosis must not hide the failure
        return f"(no diagnosis: {exc})"


def transfers_survive_kills(stack, size: int, services=FAULT_SERVICES, rounds: int = 1,
                            seed: int = 1, pause: tuple[float, float] = (0.05, 0.4),
                            per_kill: float = 2.0) -> list[dict]:
    """Show 1: a transfer each way while each service is SIGKILLed `rounds` times at random moments
    (the transfers are paced to last at least `per_kill` s per kill, so every kill lands inside them)."""
    rng = random.Random(seed)
    transfers = Transfers(stack, size, 7400 + seed * 2, seconds=per_kill * rounds * len(services) + 0.5)
    pinger = Pinger(stack)
    report = []
    try:
        wait_for(lambda: transfers.progress() > 0, 20, 0.01, "the transfers to start")
        for _ in range(rounds):
            for service in services:
                time.sleep(rng.uniform(*pause))
                if not transfers.receiver.is_alive():
                    break
                report.append({"scenario": "bulk", **kill_and_measure(stack, service, pinger)})
        outcome = transfers.finish()
    finally:
        pinger.close()
    for row in report:
        row.update(outcome)
    return report


# -- show 2: request/response on many connections survives kills --------------------

THINK_TIME = 0.01       # between a client's answer and its next request: busy, not a CPU hog that
                        # starves the restarting service's interpreter of its start-up time


def _request_loop(host: str, port: int, stop: threading.Event, record: dict) -> None:
    try:
        sock = wait_for(lambda: _connect(host, port), 20, 0.05, "the echo server")
        with sock:
            n = 0
            while not stop.is_set():
                n += 1
                request = f"request {n} ".encode().ljust(512, b".")
                sock.sendall(request)
                answer = sock.recv(len(request), libsock.MSG_WAITALL)
                if answer != request:
                    raise AssertionError(f"request {n}: answer {answer[:20]!r}... differs")
                record["answered"] = n
                time.sleep(THINK_TIME)
    except Exception as exc:
        record["error"] = exc


def requests_survive_kills(stack, connections: int = 50, services=FAULT_SERVICES, rounds: int = 1,
                           seed: int = 2) -> list[dict]:
    """Show 2: `connections` libsock clients exchange requests with a kernel echo server while
    each service is SIGKILLed `rounds` times; every request is answered, none is reset."""
    rng = random.Random(seed)
    port = 7420
    server = ns.KernelProcess(stack.netns, peers.echo_server, stack.host, port)
    stop = threading.Event()
    records = [{"answered": 0} for _ in range(connections)]
    clients = [threading.Thread(target=_request_loop, args=(stack.host, port, stop, record), daemon=True)
               for record in records]
    pinger = Pinger(stack)
    report = []
    try:
        for client in clients:
            client.start()
        wait_for(lambda: all(r["answered"] or "error" in r for r in records), 30, 0.05,
                 "every connection to get an answer")
        for _ in range(rounds):
            for service in services:
                time.sleep(rng.uniform(0.05, 0.4))
                before = [r["answered"] for r in records]
                row = kill_and_measure(stack, service, pinger)
                # every connection answers again after the kill
                wait_for(lambda: all(r["answered"] > b or "error" in r for r, b in zip(records, before)), 30,
                         0.02, f"every connection to answer after the {service} kill")
                report.append({"scenario": f"{connections} conns", **row})
        stop.set()
        for client in clients:
            client.join(30)
    finally:
        stop.set()
        pinger.close()
        server.kill()
    errors = [r["error"] for r in records if "error" in r]
    outcome = {"bytes_lost": 0 if not errors else None, "connections_reset": sum(map(_is_reset, errors)),
               "requests": sum(r["answered"] for r in records)}
    for row in report:
        row.update(outcome)
    assert not errors, (errors[:3], diagnose(stack))
    assert not any(client.is_alive() for client in clients), f"a client is stuck: {diagnose(stack)}"
    return report


# -- show 3: a tcpd kill resets promptly ----------------------------------------------

def _kernel_client_waits(host: str, port: int, killed, ready, wait: float = 5) -> str:
    """Connect to a libsock server, then after the tcpd kill send a byte (without the store the
    new tcpd answers with a reset; with it, the connection carries on): what the reads to EOF
    raised, or "eof"."""
    with std_socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"hello")
        ready.set()
        killed.wait(30)
        sock.settimeout(wait)
        try:
            sock.sendall(b"after the kill")
            while sock.recv(4096):
                pass
            return "eof"
        except OSError as exc:
            return type(exc).__name__


def _kernel_slow_reader(host: str, port: int, killed) -> str:
    """Accept one connection and read nothing until the tcpd kill; then send a byte and read."""
    with std_socket.create_server((host, port)) as listener:
        listener.settimeout(20)
        conn, _ = listener.accept()
        with conn:
            killed.wait(30)
            conn.settimeout(5)
            try:
                conn.sendall(b"after the kill")
                while conn.recv(1 << 16):
                    pass
                return "eof"
            except OSError as exc:
                return type(exc).__name__


def _block_four_calls(stack, sock, accept_listener, served, pusher):
    """recv, accept, recv on an accepted connection and a 16 MiB sendall, each in a thread,
    all asleep in tcpd when this returns: (calls, threads, outcomes, results)."""
    outcomes, results = {}, {}

    def blocked(name, fn):
        try:
            results[name] = fn()
            outcomes[name] = ("returned", time.monotonic())
        except OSError as exc:
            outcomes[name] = (type(exc).__name__, time.monotonic())

    calls = {"recv": lambda: sock.recv(100), "accept": lambda: accept_listener.accept(),
             "recv (accepted)": lambda: served.recv(100),
             "sendall": lambda: pusher.sendall(b"x" * (16 * MiB))}
    threads = [threading.Thread(target=blocked, args=item, daemon=True) for item in calls.items()]
    for t in threads:
        t.start()
    wait_for(lambda: ctl.control(stack.run_dir, "tcpd", "stats")["parked_calls"] >= len(calls), 10, 0.02,
             "every call to block")
    return calls, threads, outcomes, results


def tcpd_kill_resets_promptly(stack) -> dict:
    """Show 3: SIGKILL tcpd under blocked recv, accept and send calls."""
    echo_port, server_port, sink_port = 7450, 7451, 7452
    ctx = multiprocessing.get_context("fork")
    killed, ready = ctx.Event(), ctx.Event()
    echo = ns.KernelProcess(stack.netns, peers.echo_server, stack.host, echo_port)
    sink = ns.KernelProcess(stack.netns, _kernel_slow_reader, stack.host, sink_port, killed)
    listener = libsock.create_server(("0.0.0.0", server_port))
    listener.settimeout(10)             # the accept below must not hang the suite
    accept_listener = libsock.create_server(("0.0.0.0", server_port + 10))
    client = ns.KernelProcess(stack.netns, _kernel_client_waits, stack.addr, server_port, killed, ready)
    try:
        sock = wait_for(lambda: _connect(stack.host, echo_port), 10, 0.05, "the echo server")
        sock.sendall(b"hello")
        assert sock.recv(5, libsock.MSG_WAITALL) == b"hello"
        served, _ = listener.accept()
        assert served.recv(5, libsock.MSG_WAITALL) == b"hello"
        assert ready.wait(10)
        pusher = wait_for(lambda: _connect(stack.host, sink_port), 10, 0.05, "the slow reader")
        calls, threads, outcomes, _ = _block_four_calls(stack, sock, accept_listener, served, pusher)
        killed_at, _, _, old_pid = _kill_timed(stack, "tcpd", "KILL")
        killed.set()
        for t in threads:
            t.join(5)
        recovered = wait_for(lambda: _connect(stack.host, echo_port, timeout=5), 5, 0.01, "a new connection")
        new_connection_s = time.monotonic() - killed_at
        recovered.sendall(b"again")
        assert recovered.recv(5, libsock.MSG_WAITALL) == b"again"
        recovered.close()
        kernel = {"kernel client": client.result(20), "kernel server": sink.result(20)}
        for s in (listener, accept_listener, sock, served, pusher):
            s.close()
        return {"outcomes": {k: (v[0], round(v[1] - killed_at, 4)) for k, v in outcomes.items()},
                "kernel": kernel, "new_connection_s": round(new_connection_s, 4),
                "stuck": [name for name, t in zip(calls, threads) if t.is_alive()]
                + (["old tcpd"] if pid_alive(old_pid) else [])}
    finally:
        killed.set()
        for process in (echo, sink, client):
            process.kill()


def _kernel_reads_later(host: str, port: int, killed) -> tuple[int, str] | str:
    """Accept one connection and read nothing until the tcpd kill; then read it all."""
    with std_socket.create_server((host, port)) as listener:
        listener.settimeout(20)
        conn, _ = listener.accept()
        with conn:
            killed.wait(30)
            conn.settimeout(10)
            digest, total = hashlib.sha256(), 0
            try:
                while data := conn.recv(1 << 16):
                    digest.update(data)
                    total += len(data)
            except OSError as exc:
                return type(exc).__name__
            return total, digest.hexdigest()


def tcpd_kill_keeps_blocked_calls(stack) -> dict:
    """SIGKILL tcpd under blocked recv, accept and sendall calls: each carries on in the new tcpd
    and returns when what it waits for comes (the seconds are from that moment)."""
    echo_port, server_port, sink_port = 7450, 7451, 7452
    ctx = multiprocessing.get_context("fork")
    killed, ready = ctx.Event(), ctx.Event()
    echo = ns.KernelProcess(stack.netns, peers.echo_server, stack.host, echo_port)
    sink = ns.KernelProcess(stack.netns, _kernel_reads_later, stack.host, sink_port, killed)
    listener = libsock.create_server(("0.0.0.0", server_port))
    listener.settimeout(10)
    accept_listener = libsock.create_server(("0.0.0.0", server_port + 10))
    accept_listener.settimeout(20)
    client = ns.KernelProcess(stack.netns, _kernel_client_waits, stack.addr, server_port, killed, ready, 10)
    late = None
    try:
        sock = wait_for(lambda: _connect(stack.host, echo_port), 10, 0.05, "the echo server")
        sock.settimeout(20)
        served, _ = listener.accept()
        served.settimeout(20)
        assert served.recv(5, libsock.MSG_WAITALL) == b"hello"
        assert ready.wait(10)
        pusher = wait_for(lambda: _connect(stack.host, sink_port), 10, 0.05, "the slow reader")
        calls, threads, outcomes, results = _block_four_calls(stack, sock, accept_listener, served, pusher)
        _, _, _, old_pid = _kill_timed(stack, "tcpd", "KILL")
        stimulus = time.monotonic()          # what each call waits for comes now (or soon after)
        killed.set()
        sock.sendall(b"again")                                  # the echo answers the blocked recv
        late = ns.KernelProcess(stack.netns, _connect_and_close, stack.addr, server_port + 10)
        for t in threads:
            t.join(20)
        values_ok = {"recv": results.get("recv") == b"again",
                     "recv (accepted)": results.get("recv (accepted)") == b"after the kill",
                     "accept": bool(results.get("accept")), "sendall": "sendall" in results}
        for name, good in values_ok.items():
            if not good and outcomes.get(name, ("",))[0] == "returned":
                outcomes[name] = ("returned the wrong thing: %r" % (results.get(name),), outcomes[name][1])
        for s in (served, pusher):
            s.close()
        kernel = {"kernel client": client.result(20), "kernel server": sink.result(30)}
        if results.get("accept"):
            results["accept"][0].close()
        for s in (listener, accept_listener, sock):
            s.close()
        return {"outcomes": {k: (v[0], round(v[1] - stimulus, 4)) for k, v in outcomes.items()},
                "kernel": kernel,
                "stuck": [name for name, t in zip(calls, threads) if t.is_alive()]
                + (["old tcpd"] if pid_alive(old_pid) else [])}
    finally:
        killed.set()
        for process in (echo, sink, client, late):
            if process is not None:
                process.kill()


def _connect_and_close(host: str, port: int) -> str:
    with std_socket.create_connection((host, port), timeout=10):
        return "connected"


def tcpd_report_row(result: dict) -> dict:
    """The blocked calls' row: how long after what each waited for came it returned."""
    returned = [seconds for outcome, seconds in result["outcomes"].values() if outcome == "returned"]
    return {"scenario": "blocked calls", "service": "tcpd", "signal": "KILL", "back_s": None,
            "recovery_s": max(returned) if returned else None, "bytes_lost": 0,
            "connections_reset": sum(outcome != "returned" for outcome, _ in result["outcomes"].values())}


# -- show 4: a stopped ipd ----------------------------------------------------------------

def transfers_survive_stop(stack, size: int, service: str = "ipd", seconds: float = 3.0,
                           port: int = 7430) -> list[dict]:
    """Show 4: SIGSTOP a service for `seconds`, then SIGCONT, during a transfer each way.
    While it is stopped, the others keep serving what does not need it: every other
    service answers, libsock can listen (unless tcpd is stopped), an ICMP echo gets
    through (unless nicd or ipd is stopped)."""
    transfers = Transfers(stack, size, port, seconds=seconds + 1.0)
    pinger = Pinger(stack)
    try:
        wait_for(lambda: transfers.progress() > 0, 20, 0.01, "the transfers to start")
        time.sleep(0.1)
        _kill_timed(stack, service, "STOP")
        stopped_at = time.monotonic()
        try:
            assert transfers.receiver.is_alive() and transfers.sender.is_alive(), \
                "the transfers ended before SIGSTOP"
            for other in ctl.SERVICES:
                if other != service:
                    ctl.control(stack.run_dir, other, "status", timeout=1.0)
            if service != "tcpd":
                with libsock.create_server(("0.0.0.0", port + 9)) as listener:
                    assert listener.getsockname()[1] == port + 9
            if service not in ("nicd", "ipd"):
                assert pinger.start(5).get(timeout=15) is not None, \
                    f"no ICMP echo got through while {service} stopped"
            time.sleep(max(0.0, stopped_at + seconds - time.monotonic()))
        finally:
            continued = _kill_timed(stack, service, "CONT")[0]
        reply = pinger.start(15).get(timeout=30)
        assert reply is not None, "no ICMP echo got through after SIGCONT"
        outcome = transfers.finish()
    finally:
        pinger.close()
    return [{"scenario": "bulk", "service": service, "signal": f"STOP {seconds:g}s",
             "back_s": None, "recovery_s": round(reply - continued, 4), **outcome}]


# -- show 5: supervisord killed ----------------------------------------------------------

def instance_processes(run_dir: str) -> list[int]:
    """Every process whose command line names the run directory."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if run_dir.encode() in (entry / "cmdline").read_bytes() and pid_alive(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def leftovers(stack, dev: str = "tun0") -> list[str]:
    """What of the instance is still there: processes, namespace, device, run directory."""
    left = [f"process {pid}" for pid in instance_processes(stack.run_dir)]
    if Path("/run/netns", stack.netns).exists():
        left.append(f"namespace {stack.netns}")
        if ns.run(stack.netns, "ip", "link", "show", dev, check=False).returncode == 0:
            left.append(f"device {dev}")
    if Path(stack.run_dir).exists():
        left.append(f"run directory {stack.run_dir}")
    return left


def supervisord_killed_then_down(stack) -> dict:
    """Show 5: SIGKILL supervisord, then `netstack down`: nothing is left; `up` works again."""
    pid = int((Path(stack.run_dir) / "supervisord.pid").read_text())
    services = instance_processes(stack.run_dir)
    os.kill(pid, 9)
    wait_for(lambda: not pid_alive(pid), 5, 0.01, "supervisord to die")
    orphans = [p for p in services if p != pid and pid_alive(p)]
    started = time.monotonic()
    stack.cli("down")
    down_s = time.monotonic() - started
    left = leftovers(stack)
    stack.cli("up", *[arg for setting in FAST for arg in ("--set", setting)])
    status = stack.status()
    return {"orphans_after_kill": len(orphans), "down_s": round(down_s, 3), "left": left,
            "up_again": all(row["state"] == "RUNNING" for row in status.values())}


# -- the report -------------------------------------------------------------------------

COLUMNS = (("scenario", 14), ("service", 8), ("signal", 8), ("started_s", 10), ("back_s", 8), ("recovery_s", 11),
           ("bytes_lost", 11), ("connections_reset", 18))


def table(rows: list[dict]) -> str:
    lines = ["".join(f"{name:<{width}}" for name, width in COLUMNS)]
    for row in rows:
        cells = []
        for name, width in COLUMNS:
            value = row.get(name)
            text = "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
            cells.append(f"{text:<{width}}")
        lines.append("".join(cells))
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    """Per service and signal: recoveries measured, median and worst."""
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        if row.get("recovery_s") is not None:
            groups.setdefault((row["service"], row["signal"]), []).append(row["recovery_s"])
    lines = []
    for (service, signal), values in sorted(groups.items()):
        values.sort()
        lines.append(f"{service:8}{signal:10} n={len(values):<3} median {values[len(values) // 2]:.3f} s  "
                     f"worst {values[-1]:.3f} s")
    return "\n".join(lines)
