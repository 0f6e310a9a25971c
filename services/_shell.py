"""The loop every service shares: receive a message, call the core, send, count.

A service binds one ROUTER socket at `RUN/<name>.sock` (mode 0600: root's, the
services' own) and reaches the services it needs through send-only DEALER
sockets whose routing id is its own name.  A service applications call (tcpd,
udpd: `public_ops`) binds a second ROUTER at `RUN/public/<name>.sock`, open as
`netstack up --access` says (services/access.py); it takes only those ops,
from callers the rule admits, each known by the kernel's credentials
(`self.caller` while a handler runs).  Two sockets and not one bound twice: on
one, a caller naming itself `ipd` would take over ipd's connection
(ROUTER_HANDOVER).  The loop waits on the ROUTERs (and on nicd's device):
each ZeroMQ socket in a poll costs a few system calls per wake-up.  The loop sleeps in epoll on the ROUTER's ZMQ_FD (zmq_poll would
spend three more system calls per wake-up asking the socket for its events).
That fd only signals news, and any operation on the socket (a reply sent, too)
may take the news in: so the ROUTER is drained until empty after it signals
and after every reply, before the loop sleeps again.
A message that fails to decode is counted under its reason and logged; no
message ever kills a service.
"""
from __future__ import annotations

import errno
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
from services import access

log = logging.getLogger("netstack")

SEND_HWM = 100_000


def endpoint(run_dir: str | Path, service: str) -> str:
    return f"ipc://{Path(run_dir) / (service + '.sock')}"


VIEW_FROM = 1 << 15          # received frames this large are used in place, not copied into bytes


class Service:
    name = "service"
    public_ops: frozenset[str] = frozenset()     # what applications may send, at RUN/public/<name>.sock

    def __init__(self, run_dir: str):
        self.run_dir = Path(run_dir)
        self.config = json.loads((self.run_dir / "config.json").read_text())
        self.incarnation = secrets.token_hex(4)
        self.started = time.time()
        self.counters: dict[str, int] = {"ipc_in": 0, "ipc_out": 0, "ipc_send_dropped": 0}
        self.context = zmq.Context.instance()
        self.router = self._router(self.run_dir / f"{self.name}.sock")
        os.chmod(self.run_dir / f"{self.name}.sock", 0o600)
        self.public: zmq.Socket | None = None
        self.caller = access.ROOT             # the credentials of the message being handled
        self._creds: dict[bytes, access.Creds] = {}     # public channel -> its kernel credentials
        if self.public_ops:
            self.gate = access.Gate(self.config.get("instance", {}).get("access", access.ALL_RULE))
            public_path = access.make_public_dir(self.run_dir, self.gate) / f"{self.name}.sock"
            self.public = self._router(public_path)
            access.open_endpoint(public_path, self.gate)
        self.routers = [r for r in (self.router, self.public) if r is not None]
        self._route: dict[bytes, zmq.Socket] = {}      # a caller -> the ROUTER it spoke through
        self.peers: dict[str, zmq.Socket] = {}
        self.epoll = select.epoll()
        for router in self.routers:
            self.epoll.register(router.getsockopt(zmq.FD), select.EPOLLIN)
        self._touched: set = set()        # ROUTERs used since they were last drained
        self.fd_handlers: dict[int, Callable[[], None]] = {}
        self.handlers: dict[str, Callable[[bytes, Message], None]] = {
            "ctl": self._on_control, "hello": self._on_hello}
        self.peer_incarnations: dict[str, str] = {}
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGINT, self._on_sigterm)
        self._record_incarnation()

    # -- plumbing ---------------------------------------------------------------

    def _router(self, path: Path) -> zmq.Socket:
        router = self.context.socket(zmq.ROUTER)
        router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        router.setsockopt(zmq.RCVHWM, SEND_HWM)
        router.setsockopt(zmq.SNDHWM, SEND_HWM)
        router.setsockopt(zmq.LINGER, 0)
        router.bind(f"ipc://{path}")
        return router

    def _record_incarnation(self) -> None:
        """Append this start to RUN/incarnations/<name>: `netstack status` counts restarts from it."""
        folder = self.run_dir / access.PUBLIC_DIR / "incarnations"
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o755)                # libsock reads them, as the access rule lets it
        with open(folder / self.name, "a+") as record:
            record.write(f"{self.incarnation} {os.getpid()} {self.started:.3f}\n")
            record.seek(0)
            self.starts = sum(1 for _ in record)    # this one included: counts up across restarts
        os.chmod(folder / self.name, 0o644)

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
        router = self._route.get(identity) or self.public or self.router
        try:
            send_frames(router, [identity, *codec.encode(msg)], NOBLOCK)
            self.counters["ipc_out"] += 1
            self._touched.add(router)
        except (zmq.Again, zmq.ZMQError):
            self.counters["ipc_send_dropped"] += 1

    def refuse(self, identity: bytes, msg: Message, err: int) -> None:
        """A public message the access rule refuses: answer it with `err` if it is a call."""

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
        handlers = self.fd_handlers
        inboxes = {router.getsockopt(zmq.FD): router for router in self.routers}
        news = set(self.routers)
        touched = self._touched
        while True:
            unread = set()
            for router in self.routers:
                if router in news or router in touched:   # last before sleeping: see the module's docstring
                    touched.discard(router)               # (its replies are followed by its own last recv)
                    if not self._drain(router):
                        unread.add(router)
            deadline = self.next_deadline()
            timeout = -1.0
            if unread or touched:                         # (touched: by the other ROUTER's handlers)
                timeout = 0.0
            elif deadline is not None:
                # at most an hour: epoll's timeout overflows for a deadline far away (a timer
                # armed for 1e9 s), and waking once an hour to look again costs nothing
                timeout = min(max(0.0, deadline - time.monotonic()), 3600.0)
            news = unread
            for fd, _ in self.epoll.poll(timeout):
                router = inboxes.get(fd)
                if router is not None:
                    news.add(router)
                else:
                    handlers[fd]()
            self.tick(time.monotonic())

    def _public_caller(self, identity: bytes, first: zmq.Frame) -> access.Creds | None:
        """The kernel's credentials of a public caller, if its name carries its pid (access.py)."""
        creds = self._creds.get(identity)
        if creds is None:
            try:
                creds = access.peer_creds(first.get("Peer-Address"))
            except zmq.ZMQError:
                creds = None
            if creds is None or access.identity_pid(identity) != creds.pid:
                return None
            if len(self._creds) >= 100_000:
                self._creds.clear()
            self._creds[identity] = creds
        return creds

    def _drain(self, sock: zmq.Socket, budget: int = 256) -> bool:
        """Handle what waits at a ROUTER, up to `budget` messages; True when it is empty."""
        public = sock is self.public
        creds = access.ROOT
        for _ in range(budget):
            try:
                frames = recv_frames(sock, NOBLOCK)
            except zmq.Again:
                return True
            self.counters["ipc_in"] += 1
            if public:
                creds = self._public_caller(frames[0].bytes, frames[0])
                if creds is None:
                    self.count("ipc_refused_identity")
                    continue
            # large payloads stay in ZeroMQ's buffer (a read-only memoryview), small ones become bytes
            frames = [frame.bytes if len(frame) < VIEW_FROM else frame.buffer for frame in frames]
            identity, frames = frames[0], frames[1:]
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
            if public:
                if msg.OP not in self.public_ops:
                    self.count("ipc_refused_op")            # segments, timers, control: not from here
                    continue
                if not self.gate.admits(creds):
                    self.count("ipc_refused_access")
                    self.refuse(identity, msg, errno.EACCES)
                    continue
            if self._route.get(identity) is not sock:
                if len(self._route) >= 100_000:
                    self._route.clear()
                self._route[identity] = sock
            self.caller = creds
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
        for router in self.routers:
            router.close(0)
        self.epoll.close()


def main(service_class: type[Service]) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} RUN_DIR")
    service_class(sys.argv[1]).run()
