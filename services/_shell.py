"""The loop every service shares: receive a message, call the core, send, count.

A service binds one ROUTER socket at `RUN/<name>.sock` (anyone may talk to it)
and reaches the services it needs through send-only DEALER sockets whose
routing id is its own name.  Every message to a service, from a peer or from
libsock, arrives at its ROUTER, so the loop waits on that one socket (and on
nicd's device): each ZeroMQ socket in a poll costs a few system calls per
wake-up.  The loop sleeps in epoll on the ROUTER's ZMQ_FD (zmq_poll would
spend three more system calls per wake-up asking the socket for its events).
That fd only signals news, and any operation on the socket (a reply sent, too)
may take the news in: so the ROUTER is drained until empty after it signals
and after every reply, before the loop sleeps again.
A message that fails to decode is counted under its reason and logged; no
message ever kills a service.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import select
import signal
import sys
import time
from pathlib import Path
from typing import Callable

import zmq

from proto.ipc import codec
from proto.ipc.messages import Control, ControlReply, Hello, Message
from channel.frames import NOBLOCK, recv_frames, send_frames

log = logging.getLogger("netstack")

SEND_HWM = 100_000


def endpoint(run_dir: str | Path, service: str) -> str:
    return f"ipc://{Path(run_dir) / (service + '.sock')}"


VIEW_FROM = 1 << 15          # received frames this large are used in place, not copied into bytes


class Service:
    name = "service"

    def __init__(self, run_dir: str):
        self.run_dir = Path(run_dir)
        self.config = json.loads((self.run_dir / "config.json").read_text())
        self.incarnation = secrets.token_hex(4)
        self.started = time.time()
        self.counters: dict[str, int] = {"ipc_in": 0, "ipc_out": 0, "ipc_send_dropped": 0}
        self.context = zmq.Context.instance()
        self.router = self.context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.router.setsockopt(zmq.RCVHWM, SEND_HWM)
        self.router.setsockopt(zmq.SNDHWM, SEND_HWM)
        self.router.setsockopt(zmq.LINGER, 0)
        sock_path = self.run_dir / f"{self.name}.sock"
        self.router.bind(endpoint(self.run_dir, self.name))
        os.chmod(sock_path, 0o600)
        self.peers: dict[str, zmq.Socket] = {}
        self.epoll = select.epoll()
        self.epoll.register(self.router.getsockopt(zmq.FD), select.EPOLLIN)
        self._inbox_touched = False       # the ROUTER was used since it was last drained
        self.fd_handlers: dict[int, Callable[[], None]] = {}
        self.handlers: dict[str, Callable[[bytes, Message], None]] = {
            "ctl": self._on_control, "hello": self._on_hello}
        self.peer_incarnations: dict[str, str] = {}
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGINT, self._on_sigterm)
        self._record_incarnation()

    # -- plumbing ---------------------------------------------------------------

    def _record_incarnation(self) -> None:
        """Append this start to RUN/incarnations/<name>: `netstack status` counts restarts from it."""
        folder = self.run_dir / "incarnations"
        folder.mkdir(exist_ok=True)
        with open(folder / self.name, "a") as record:
            record.write(f"{self.incarnation} {os.getpid()} {self.started:.3f}\n")

    def peer(self, service: str) -> zmq.Socket:
        sock = self.peers.get(service)
        if sock is None:
            sock = self.context.socket(zmq.DEALER)
            sock.setsockopt(zmq.ROUTING_ID, self.name.encode())
            sock.setsockopt(zmq.SNDHWM, SEND_HWM)
            sock.setsockopt(zmq.RCVHWM, SEND_HWM)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(endpoint(self.run_dir, service))
            self.peers[service] = sock        # send-only: every message to us arrives at our ROUTER
        return sock

    def send(self, service: str, msg: Message) -> None:
        """Send to a service without ever blocking: a full queue drops, like a full NIC ring."""
        try:
            send_frames(self.peer(service), codec.encode(msg), NOBLOCK)
            self.counters["ipc_out"] += 1
        except zmq.Again:
            self.counters["ipc_send_dropped"] += 1

    def reply(self, identity: bytes, msg: Message) -> None:
        try:
            send_frames(self.router, [identity, *codec.encode(msg)], NOBLOCK)
            self.counters["ipc_out"] += 1
            self._inbox_touched = True
        except (zmq.Again, zmq.ZMQError):
            self.counters["ipc_send_dropped"] += 1

    def announce(self, service: str) -> None:
        self.send(service, Hello(self.name, self.incarnation, os.getpid()))

    def watch(self, fd: int, handler: Callable[[], None]) -> None:
        """Call `handler` whenever `fd` is readable (nicd's device)."""
        self.epoll.register(fd, select.EPOLLIN)
        self.fd_handlers[fd] = handler

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    # -- the loop ---------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The next CLOCK_MONOTONIC instant the service must wake at, if any."""
        return None

    def tick(self, now: float) -> None:
        """Called after every wake-up: expire what is due."""

    def run(self) -> None:
        log.info("%s incarnation %s pid %d", self.name, self.incarnation, os.getpid())
        try:
            self._loop()
        except SystemExit:
            pass
        finally:
            self.close()

    def _loop(self) -> None:
        handlers, inbox = self.fd_handlers, self.router.getsockopt(zmq.FD)
        news = True
        while True:
            emptied = True
            if news or self._inbox_touched:           # last before sleeping: see the module's docstring
                emptied = self._drain()               # (its replies are followed by its own last recv)
                self._inbox_touched = False
            deadline = self.next_deadline()
            timeout = -1.0
            if not emptied:
                timeout = 0.0
            elif deadline is not None:
                # at most an hour: epoll's timeout overflows for a deadline far away (a timer
                # armed for 1e9 s), and waking once an hour to look again costs nothing
                timeout = min(max(0.0, deadline - time.monotonic()), 3600.0)
            news = not emptied
            for fd, _ in self.epoll.poll(timeout):
                if fd == inbox:
                    news = True
                else:
                    handlers[fd]()
            self.tick(time.monotonic())

    def _drain(self, budget: int = 256) -> bool:
        """Handle what waits at the ROUTER, up to `budget` messages; True when it is empty."""
        sock = self.router
        for _ in range(budget):
            try:
                frames = recv_frames(sock, NOBLOCK)
            except zmq.Again:
                return True
            # large payloads stay in ZeroMQ's buffer (a read-only memoryview), small ones become bytes
            frames = [frame.bytes if len(frame) < VIEW_FROM else frame.buffer for frame in frames]
            identity, frames = frames[0], frames[1:]
            self.counters["ipc_in"] += 1
            try:
                msg = codec.decode(frames)
            except codec.MessageError as exc:
                self.count("ipc_bad_" + exc.reason)
                log.warning("%s: dropped a malformed message: %s", self.name, exc)
                continue
            handler = self.handlers.get(msg.OP)
            if handler is None:
                self.count("ipc_unexpected_op")
                log.warning("%s: no handler for %s", self.name, msg.OP)
                continue
            try:
                handler(identity, msg)
            except Exception:       # a bug in us: log it loudly, keep serving
                self.count("handler_errors")
                log.exception("%s: handler for %s failed", self.name, msg.OP)
        return False

    def _on_hello(self, identity: bytes, msg: Hello) -> None:
        previous = self.peer_incarnations.get(msg.service)
        self.peer_incarnations[msg.service] = msg.incarnation
        if previous != msg.incarnation:
            log.info("%s: %s is incarnation %s (pid %d)", self.name, msg.service, msg.incarnation, msg.pid)
            self.peer_restarted(msg.service, previous)

    def peer_restarted(self, service: str, previous: str | None) -> None:
        """A peer announced a new incarnation; re-synchronise with it if needed."""

    def _on_control(self, identity: bytes, msg: Control) -> None:
        method = getattr(self, "control_" + msg.what, None)
        if method is None:
            self.reply(identity, ControlReply(msg.id, False, f"unknown control {msg.what!r}"))
            return
        try:
            value = method(**msg.args)
        except Exception as exc:
            self.reply(identity, ControlReply(msg.id, False, f"{type(exc).__name__}: {exc}"))
            return
        self.reply(identity, ControlReply(msg.id, True, value))

    def control_status(self) -> dict:
        return {"service": self.name, "incarnation": self.incarnation, "pid": os.getpid(),
                "started": self.started}

    def control_stats(self) -> dict:
        return dict(self.counters)

    def _on_sigterm(self, signum, frame) -> None:
        # raised from inside the poll, which would otherwise retry after EINTR
        raise SystemExit(0)

    def close(self) -> None:
        for sock in self.peers.values():
            sock.close(0)
        self.router.close(0)
        self.epoll.close()


def main(service_class: type[Service]) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} RUN_DIR")
    service_class(sys.argv[1]).run()
