"""fileno(): a real descriptor whose readability and writability follow the socket.

Each watched socket gets one end (`fd`) of a kernel AF_UNIX socketpair, which is
what the program registers with select, poll, epoll, selectors or asyncio, beside
its other descriptors.  libsock holds the other end and sets the pair's state:

- readable: one byte waits in `fd` (written from the other end); not readable:
  `fd` is drained;
- writable: the other end has read everything `fd` sent; not writable: `fd` has
  filled its (minimal, 4.5 KiB) send buffer towards the other end.

So all four combinations exist (an eventfd cannot be neither readable nor writable,
which a connecting socket or a full send buffer with no data is), and every change
is a real kernel wake-up: epoll's edge-triggered mode sees each edge.  Readable
shows select's read set (POLLIN, POLLHUP, POLLERR); writable its write set
(POLLOUT, POLLERR).

The state comes from tcpd (services/readiness.py): every Reply to a call on a
watched socket carries `[version, mask]` (applied by the calling thread, so a recv
that got EAGAIN leaves the descriptor unreadable before it returns), and gains
arrive unasked on the process's readiness channel, a DEALER read by one daemon
thread.  A mask is applied only if its version is newer than the one shown.  That
thread also checks every LIVENESS_CHECK seconds that tcpd still lives: when the
incarnation holding a socket dies, its descriptor turns readable and writable,
so a program waiting on it calls and gets ECONNRESET (it would wait forever).

This is how VPP's VCL and OpenOnload solve it from the other side: they replace
epoll (LD_PRELOAD) and merge their own events with the kernel's; a Python program
calls the real select/epoll on real descriptors, so libsock makes the descriptors
real and keeps them true, as gVisor's waiter queues keep a host fd's events true.
"""
from __future__ import annotations

import errno
import os
import secrets
import socket as _std
import threading
import weakref

import zmq

from proto.ipc import codec
from proto.ipc.messages import Call, DatagramCall, DatagramReply, Readiness, Reply
from proto.poll import POLLERR, POLLHUP, POLLIN, POLLOUT, POLLRDHUP
from channel.frames import send_frames

READ_SET, WRITE_SET = POLLIN | POLLHUP | POLLERR, POLLOUT | POLLERR
LIVENESS_CHECK_MS = 1000
EARLY_KEPT = 4096           # gains kept for sockets not watched yet (Notifier.deliver)
_FILL = bytes(1 << 16)
_mirror_fds: set[int] = set()       # the descriptors fileno() handed out, open now


def is_mirror(fd) -> bool:
    return fd in _mirror_fds


class Mirror:
    """One socket's descriptor and what it shows."""

    __slots__ = ("_a", "_b", "fd", "readable", "writable", "version", "lock", "incarnation", "held",
                 "_told", "_ended", "pid", "__weakref__")

    def __init__(self, incarnation: str = "") -> None:
        self.incarnation = incarnation
        self.pid = os.getpid()          # a forked child makes its own (it is not the watcher)
        self._a, self._b = _std.socketpair(_std.AF_UNIX, _std.SOCK_STREAM)
        self._a.setblocking(False)
        self._b.setblocking(False)
        self._a.setsockopt(_std.SOL_SOCKET, _std.SO_SNDBUF, 1)     # the minimum: few bytes fill it
        self.fd = self._a.fileno()
        _mirror_fds.add(self.fd)
        self.readable, self.writable, self.version = False, True, 0
        self.held = False               # libsock itself holds something to read (an interrupted recv's)
        self._told = (False, False)     # what tcpd last said
        self._ended = 0                 # 1: EOF shown (POLLRDHUP), 2: both ways shut (POLLHUP)
        self.lock = threading.Lock()
        self._show(False, False)        # nothing until tcpd says (a connecting socket is neither)

    def apply(self, version: int, mask: int) -> None:
        with self.lock:
            if version <= self.version or self.fd < 0:
                return
            self.version = version
            if mask & POLLRDHUP:
                self._end(2 if mask & POLLHUP else 1)
            self._told = (bool(mask & READ_SET), bool(mask & WRITE_SET))
            self._show(*self._told)

    def _end(self, ended: int) -> None:
        """EOF, and then both ways shut, are for good (a connected socket never connects again):
        the other end shuts down, so that poll and epoll show POLLIN|POLLRDHUP, then POLLHUP,
        as Linux's tcp_poll sets them."""
        if ended > self._ended:
            try:
                self._b.shutdown(_std.SHUT_RDWR if ended == 2 else _std.SHUT_WR)
            except OSError:
                pass
            self._ended = ended

    def renew(self) -> None:
        """The service that keeps this socket's state started again (a restore, or another
        instance): its versions are not comparable with those shown; the next is taken."""
        with self.lock:
            self.version = 0

    def force(self, readable: bool, writable: bool) -> None:
        with self.lock:
            if self.fd >= 0:
                self._told = (readable, writable)
                self._show(readable, writable)

    def hold(self, held: bool) -> None:
        with self.lock:
            if self.fd >= 0 and held != self.held:
                self.held = held
                self._show(*self._told)

    def _show(self, readable: bool, writable: bool) -> None:
        readable = readable or self.held
        if readable != self.readable:
            self.readable = readable
            if self._ended:
                pass                    # EOF: readable for good (the other end is shut)
            elif readable:
                self._quietly(self._b.send, b"r")
            else:
                self._drain(self._a)
        if writable != self.writable:
            self.writable = writable
            if writable:
                self._drain(self._b)
            else:
                self._quietly(self._fill)

    def _fill(self) -> None:
        while self._a.send(_FILL) == len(_FILL):
            pass

    @staticmethod
    def _quietly(operation, *args) -> None:
        try:
            operation(*args)
        except BlockingIOError:
            pass                        # full: what was wanted
        except OSError:
            pass                        # shut (for good), or the program closed our descriptor

    @staticmethod
    def _drain(end: _std.socket) -> None:
        try:
            while end.recv(1 << 16):
                pass
        except OSError:
            pass

    def close(self) -> None:
        with self.lock:
            _mirror_fds.discard(self.fd)
            self.fd = -1
            self._a.close()
            self._b.close()


class Notifier:
    """A process's readiness channel to one tcpd, and the thread that reads it.  (The hooks
    `_wait`, `_hello` and `_check` are what differs for udpd: DatagramNotifier.)"""

    answer = Reply          # what the service answers `_hello` with

    def __init__(self, stack) -> None:
        self.stack = stack
        self.pid = os.getpid()
        self.identity = f"n{os.getpid()}.{secrets.token_hex(6)}".encode()
        # socket id -> its mirror (ids are unique within a tcpd incarnation; a Mirror knows its own)
        self.mirrors: "weakref.WeakValueDictionary[int, Mirror]" = weakref.WeakValueDictionary()
        self._mirrors_lock = threading.Lock()       # app threads add, the reader iterates
        # socket id -> (version, mask): gains that came before the socket's mirror (deliver)
        self.early: dict[int, tuple[int, int]] = {}
        self.ready = threading.Event()
        self.failed: OSError | None = None
        self.thread = threading.Thread(target=self._run, name="libsock-readiness", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTING_ID, self.identity)
        sock.connect(self.stack.endpoint)
        try:
            self._wait()
        except OSError as exc:
            self.failed = exc
            self.ready.set()
            return
        # a call answered on this channel: from then on the service's ROUTER can route to it
        self._say_hello(sock)
        while True:
            if not sock.poll(LIVENESS_CHECK_MS):
                if self.ready.is_set():
                    self._check(sock)
                else:           # unanswered (the service restarting then): ask the one there is now
                    self._say_hello(sock)
                continue
            try:
                msg = codec.decode(sock.recv_multipart())
            except codec.MessageError:
                continue
            if isinstance(msg, Readiness):
                self.deliver(msg.entries)
            elif isinstance(msg, self.answer):
                self.ready.set()

    def _wait(self) -> None:
        self.stack.wait_for_tcpd(0)

    def _say_hello(self, sock) -> None:
        tcpd = self.stack._read_tcpd()
        if tcpd is not None:
            send_frames(sock, codec.encode(Call(1, "sync", [tcpd[0], 0], [], 0)))

    def deliver(self, entries) -> None:
        """Gains from tcpd.  One for a socket not watched here yet is kept for it: an accepted
        connection is watched by tcpd from the accept on (its first state rides in the accept's
        answer), but its mirror is registered only once that answer is back in the accepting
        thread, and a gain sent meanwhile (the first data) reaches this thread first.  tcpd
        tells a gain once: dropped here, the descriptor would never turn readable."""
        mirrors = self.mirrors
        for entry in entries:
            if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], int)):
                continue
            mirror = mirrors.get(entry[0])
            if mirror is None:
                with self._mirrors_lock:        # watch() registers and looks here under the lock
                    mirror = mirrors.get(entry[0])
                    if mirror is None:
                        kept = self.early.get(entry[0])
                        if kept is None or kept[0] < entry[1]:
                            self.early[entry[0]] = (entry[1], entry[2])
                        while len(self.early) > EARLY_KEPT:     # (a closed socket's: none will come)
                            del self.early[next(iter(self.early))]
                        continue
            mirror.apply(entry[1], entry[2])

    def _check(self, sock) -> None:
        """Sockets of a tcpd incarnation that is gone: readable and writable, so that the
        program calls on them and learns ECONNRESET instead of waiting forever.  If a new tcpd
        took them over (it recovered them from its store), once: the program's next call
        carries their state from the new tcpd, whose later news comes on this channel once
        it has heard from it (a call answered makes the channel routable again)."""
        if not self.mirrors:
            return
        tcpd = self.stack._read_tcpd()
        with self._mirrors_lock:
            mirrors = list(self.mirrors.values())
        lineage = None
        taken_over = False
        for mirror in mirrors:
            if tcpd is not None and mirror.incarnation == tcpd[0]:
                continue
            if tcpd is not None and lineage is None:
                lineage = self.stack._lineage()
            if lineage is not None and lineage[0] == tcpd[0] and mirror.incarnation in lineage[1]:
                mirror.incarnation = tcpd[0]
                taken_over = True
            mirror.force(True, True)
        if taken_over:
            self._say_hello(sock)

    def watch(self, key: int, incarnation: str) -> Mirror:
        """A mirror for socket `key` (tcpd's socket id; udpd's sid) of the service's `incarnation`."""
        if not self.ready.wait(5.0):
            raise OSError(errno.ENETDOWN, "libsock: the stack did not answer on the readiness channel")
        if self.failed is not None:
            raise self.failed
        mirror = Mirror(incarnation)
        with self._mirrors_lock:
            self.mirrors[key] = mirror
            early = self.early.pop(key, None)
        if early is not None:
            mirror.apply(*early)        # (a Reply's older state applied after it is ignored)
        return mirror


class DatagramNotifier(Notifier):
    """A process's readiness channel to udpd (libsock/udp.py's sockets).  udpd keeps no
    watches across its death: when its incarnation changes, every mirror of an older one turns
    readable and writable, so that the program calls, the call re-creates the socket in the new
    udpd (udp.py's restore) and watches it again, and the answer shows its true state."""

    answer = DatagramReply

    def _wait(self) -> None:
        self.stack.wait_for_udpd()

    greeted: str | None = None      # the udpd incarnation last said hello to

    def _say_hello(self, sock) -> None:
        """udpd answers, and tells again every socket watched through this channel: a gain it
        sent while the channel was reconnecting to it (after a restart) was dropped."""
        self.greeted = self.stack.incarnation()
        send_frames(sock, codec.encode(DatagramCall(1, "hello", 0, [], 0)))

    def _check(self, sock) -> None:
        now = self.stack.incarnation()
        if now is not None and now != self.greeted:
            self._say_hello(sock)
        if not self.mirrors:
            return
        with self._mirrors_lock:
            mirrors = list(self.mirrors.values())
        for mirror in mirrors:
            if mirror.incarnation != now:
                mirror.force(True, True)


def mine(mirror: Mirror | None) -> Mirror | None:
    """`mirror` if this process made it; None (and the copy closed) in a forked child, which
    is not the watcher: it makes its own."""
    if mirror is not None and mirror.pid != os.getpid():
        mirror.close()
        return None
    return mirror


_notifiers: dict[int, Notifier] = {}        # id(stack) -> this process's notifier for it
_lock = threading.Lock()


def _more_descriptors() -> None:
    """Each watched socket costs the process two descriptors (the kernel's socket one): the
    soft RLIMIT_NOFILE goes up to the hard one, as servers that expect many connections do."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


def notifier(stack, kind: type[Notifier] = Notifier) -> Notifier:
    """This process's notifier for `stack` (a tcpd's Stack, or udpd's DatagramStack with
    kind=DatagramNotifier)."""
    with _lock:
        if not _notifiers:
            _more_descriptors()
        found = _notifiers.get(id(stack))
        # a forked child starts its own; one that failed (the stack was down, or restarting
        # then) is not kept: the next fileno() tries again
        if found is None or found.pid != os.getpid() or found.failed is not None:
            found = _notifiers[id(stack)] = kind(stack)
        return found


def apply(stack, key: int, ready) -> None:
    """A reply's `ready` for socket `key`, applied by the thread that made the call."""
    found = _notifiers.get(id(stack))
    if found is None or not isinstance(ready, list) or len(ready) != 2:
        return
    mirror = found.mirrors.get(key)
    if mirror is not None:
        mirror.apply(ready[0], ready[1])
