"""SOCK_DGRAM on the netstack: the UDP socket an application holds, whose calls
cross to udpd (not tcpd) as `DatagramCall` messages.

`libsock.socket(AF_INET, SOCK_DGRAM)` returns a `DatagramSocket`.  Each thread
has its own channel (a DEALER) to udpd, one outstanding call on it at a time.
udpd returns the socket's state (addresses, binding, options) whenever it
changes; the socket keeps it, and when udpd restarts (a call answers ESTALE,
or udpd's incarnation changes while a call waits) it re-creates itself in the
new udpd from that state and repeats the call: a bound socket stays bound and
receives again, and only datagrams in flight are lost (UDP promises no more).

fileno() is the readiness descriptor TCP sockets have (_readiness.py): udpd tells
the process the socket's poll mask (readable with a datagram or an error
waiting, always writable), so selectors and asyncio's datagram endpoints wait
on it beside their other descriptors.
"""
from __future__ import annotations

import errno
import itertools
import os
import secrets
import socket as _std
import threading
import time
import weakref
from pathlib import Path

import zmq

from libsock import _readiness, _rpc
from libsock.socket import socket as _stream
from proto.ipc import codec
from proto.ipc.messages import NAMED_SOCKET_IDS, DatagramCall, DatagramReply
from channel.frames import send_frames

AF_INET, AF_UNSPEC, SOCK_DGRAM = _std.AF_INET, _std.AF_UNSPEC, _std.SOCK_DGRAM
IPPROTO_UDP, SOL_SOCKET = _std.IPPROTO_UDP, _std.SOL_SOCKET
SO_BROADCAST, SO_ERROR, SO_TYPE = _std.SO_BROADCAST, _std.SO_ERROR, _std.SO_TYPE
MSG_PEEK, MSG_DONTWAIT, MSG_TRUNC = _std.MSG_PEEK, _std.MSG_DONTWAIT, _std.MSG_TRUNC
SOCK_NONBLOCK = _std.SOCK_NONBLOCK
MAX_PAYLOAD = 65507

LIVENESS_CHECK_MS = 200
STARTUP_WAIT = 5.0           # a call waits this long for a restarting udpd
CANCEL_WAIT_MS = 1000        # after a signal: how long to wait for udpd to end the call


class _Restarted(Exception):
    """udpd does not know the socket (it restarted): re-create it and call again."""


def _error(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class DatagramStack:
    """udpd of the instance found through NETSTACK_RUN, and this process's channels to it."""

    def __init__(self, run_dir: str):
        self.run_dir = Path(run_dir)
        self.endpoint = f"ipc://{self.run_dir / 'public' / 'udpd.sock'}"
        self._local = threading.local()
        self._ids = itertools.count(1)

    @property
    def answered_by(self) -> str | None:
        """The udpd incarnation of this thread's last answer."""
        return getattr(self._local, "answered_by", None)

    def incarnation(self) -> str | None:
        """udpd's newest incarnation, if it is alive."""
        try:
            with open(self.run_dir / "incarnations" / "udpd", "rb") as record:     # (-> public/)
                record.seek(0, os.SEEK_END)
                record.seek(max(0, record.tell() - 200))
                last = record.read().split(b"\n")[-2].split()
            incarnation, pid = last[0].decode(), int(last[1])
            os.kill(pid, 0)
        except PermissionError:
            return incarnation
        except (OSError, IndexError, ValueError):
            return None
        return incarnation

    def wait_for_udpd(self, patience: float = STARTUP_WAIT) -> str:
        deadline = time.monotonic() + patience
        stack = _rpc.stack()
        while True:
            reachable = _rpc.public_endpoint(self.run_dir, "udpd")      # (EACCES first: _rpc's wait)
            incarnation = self.incarnation()
            if incarnation is not None and reachable:
                return incarnation
            if time.monotonic() >= deadline or not stack._supervised():
                raise stack.down_error()
            time.sleep(0.02)

    def _channel(self) -> zmq.Socket:
        channel = getattr(self._local, "channel", None)
        if channel is None or self._local.pid != os.getpid():
            channel = zmq.Context.instance().socket(zmq.DEALER)
            channel.setsockopt(zmq.LINGER, 1000)
            # udpd reads the pid from it, and closes what this process holds once it dies
            channel.setsockopt(zmq.ROUTING_ID, f"p{os.getpid()}.{secrets.token_hex(6)}".encode())
            channel.connect(self.endpoint)
            self._local.channel, self._local.pid = channel, os.getpid()
        return channel

    def _drop_channel(self) -> None:
        channel = getattr(self._local, "channel", None)
        if channel is not None:
            channel.close(0)
            self._local.channel = None

    def post(self, op: str, sid: int, args: list, data=None) -> None:
        send_frames(self._channel(), codec.encode(DatagramCall(0, op, sid, args, None,
                                                               payload=(data,) if data is not None else ())))

    def call(self, op: str, sid: int, args: list, timeout: float | None, data=None, keep=None):
        """One call; (value, data frame or None).  OSError with udpd's errno, _Restarted when
        udpd no longer knows the socket.  A signal handler that raises while the call sleeps
        withdraws it; an answer already on its way goes to `keep`."""
        incarnation = self.incarnation()
        channel = self._channel()
        request_id = next(self._ids)
        send_frames(channel, codec.encode(DatagramCall(request_id, op, sid, args, timeout,
                                                       payload=(data,) if data is not None else ())))
        while True:
            try:
                ready = channel.poll(LIVENESS_CHECK_MS)
            except BaseException:
                self._withdraw(channel, request_id, sid, keep)
                raise
            if ready:
                try:
                    reply = codec.decode(channel.recv_multipart())
                except codec.MessageError:
                    continue
                except BaseException:
                    self._drop_channel()
                    raise
                if not isinstance(reply, DatagramReply) or reply.id != request_id:
                    continue                 # the answer to a call abandoned earlier
                if reply.errno == errno.ESTALE:
                    raise _Restarted()
                if reply.ready is not None:      # the socket's readiness, for its fileno()
                    _readiness.apply(self, sid, reply.ready)
                self._local.answered_by = reply.incarnation
                if reply.errno:
                    raise _error(reply.errno)
                return reply.value, (reply.payload[0] if reply.payload else None)
            now = self.incarnation()
            if now != incarnation:           # udpd died (or died and came back): the call is lost
                self._drop_channel()
                if now is None:
                    self.wait_for_udpd()
                raise _Restarted()

    def _withdraw(self, channel: zmq.Socket, request_id: int, sid: int, keep) -> None:
        try:
            send_frames(channel, codec.encode(DatagramCall(0, "cancel", sid, [request_id], None)))
            if channel.poll(CANCEL_WAIT_MS):
                reply = codec.decode(channel.recv_multipart())
                if isinstance(reply, DatagramReply) and reply.id == request_id and not reply.errno and keep:
                    if reply.ready is not None:
                        _readiness.apply(self, sid, reply.ready)
                    keep(reply)
                return
        except BaseException:
            pass
        self._drop_channel()


_stacks: dict[str, DatagramStack] = {}
_stacks_lock = threading.Lock()


def datagram_stack() -> DatagramStack:
    run_dir = os.environ.get("NETSTACK_RUN", "/run/netstack/default")
    with _stacks_lock:
        found = _stacks.get(run_dir)
        if found is None:
            found = _stacks[run_dir] = DatagramStack(run_dir)
        return found


_owned: "weakref.WeakSet[DatagramSocket]" = weakref.WeakSet()


def _close_owned() -> None:
    for sock in list(_owned):
        if sock._pid == os.getpid() and not sock._closed:
            sock._closed = True
            try:
                sock._stack.post("close", sock._sid, [])
            except (OSError, zmq.ZMQError):
                pass


_rpc.exit_hooks.append(_close_owned)


def _address_text(addr) -> str:
    return "%d.%d.%d.%d" % tuple(addr)


class DatagramSocket:
    """An AF_INET, SOCK_DGRAM socket on the netstack, as CPython's socket.socket."""

    def __init__(self, family: int = AF_INET, type: int = SOCK_DGRAM, proto: int = 0, fileno=None):
        if fileno is not None:
            raise OSError(errno.EINVAL, "libsock cannot adopt a file descriptor")
        if proto not in (0, IPPROTO_UDP):
            raise OSError(errno.EPROTONOSUPPORT, os.strerror(errno.EPROTONOSUPPORT))
        self._stack = datagram_stack()
        self._timeout = 0.0 if type & SOCK_NONBLOCK else _std.getdefaulttimeout()
        self._closed = False
        self._mirror = None       # fileno()'s descriptor, made on the first call (_readiness.py)
        self._incarnation = None  # the udpd that holds it (known from its answers)
        self._state = None        # udpd's last word on it: [local, port, peer, peer port, locks, options]
        self._pending: list = []  # what a receive took after its caller was interrupted
        self._lock = threading.Lock()
        self._stack.wait_for_udpd()
        self._sid = NAMED_SOCKET_IDS + secrets.randbits(62)
        # posted: this thread's later calls come after it; another thread's call may come first,
        # finds no socket (ESTALE) and creates it as a restore would
        self._stack.post("socket", self._sid, [None])
        self._pid = os.getpid()
        _owned.add(self)

    family = property(lambda self: _std.AddressFamily.AF_INET)
    type = property(lambda self: _std.SocketKind.SOCK_DGRAM)
    proto = property(lambda self: IPPROTO_UDP)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"laddr={self.getsockname()}"
        return f"<libsock.DatagramSocket {state} timeout={self._timeout}>"

    # -- plumbing -------------------------------------------------------------

    def _call(self, op: str, *args, timeout: float | None = 0.0, data=None, keep=None):
        if self._closed:
            raise OSError(errno.EBADF, "Bad file descriptor")
        deadline = None if not timeout else time.monotonic() + timeout
        for _ in range(5):
            try:
                answer = self._stack.call(op, self._sid, list(args), timeout, data, keep)
                self._incarnation = self._stack.answered_by
                return answer
            except _Restarted:
                self._restore()
                if deadline is not None:
                    timeout = max(0.0, deadline - time.monotonic())
        raise OSError(errno.EIO, "udpd keeps restarting")

    def _restore(self, watch: bool = True) -> None:
        """Re-create this socket in a new udpd, bound and connected as it was."""
        self._stack.wait_for_udpd()
        try:
            self._state, _ = self._stack.call("socket", self._sid, [self._state], 0)
        except OSError as exc:
            if exc.errno != errno.EEXIST:    # (another thread restored it first)
                raise
        if self._mirror is not None and watch:      # the new udpd watches it for this process again
            self._watch()

    def _blocking_call(self, op: str, *args, flags: int = 0, data=None, keep=None):
        wait = 0.0 if flags & MSG_DONTWAIT else self._timeout
        try:
            return self._call(op, *args, timeout=wait, data=data, keep=keep)
        except BlockingIOError:
            if wait:
                raise _std.timeout("timed out") from None
            raise

    @staticmethod
    def _address(address, call: str) -> tuple[str, int]:
        from libsock.socket import _resolve
        return _resolve(address, call)

    # -- blocking mode: as the TCP socket's (the same functions, on _timeout and _closed) ---

    settimeout, gettimeout = _stream.settimeout, _stream.gettimeout
    setblocking, getblocking = _stream.setblocking, _stream.getblocking

    # -- the calls ----------------------------------------------------------------

    def bind(self, address) -> None:
        host, port = self._address(address, "bind")
        self._state, _ = self._call("bind", host, port)

    def connect(self, address) -> None:
        """Connect to (host, port); `connect(AF_UNSPEC)` dissolves the association, as a
        connect with an AF_UNSPEC address does in C (CPython offers no way to write one)."""
        if address == AF_UNSPEC:
            self._state, _ = self._call("connect", None, 0)
            return
        host, port = self._address(address, "connect")
        self._state, _ = self._call("connect", host, port)

    def connect_ex(self, address) -> int:
        try:
            self.connect(address)
        except OSError as exc:
            if exc.errno is None:
                raise
            return exc.errno
        return 0

    def sendto(self, data, flags_or_address, address=None) -> int:
        if address is None:
            flags, address = 0, flags_or_address
        else:
            flags = flags_or_address
        host, port = self._address(address, "sendto")
        return self._send(data, flags, host, port)

    def send(self, data, flags: int = 0) -> int:
        return self._send(data, flags, None, 0)

    def sendall(self, data, flags: int = 0) -> None:
        self._send(data, flags, None, 0)

    def _send(self, data, flags: int, host: str | None, port: int) -> int:
        data = bytes(data) if not isinstance(data, bytes) else data
        if self._may_post(host, port, len(data)):
            # udpd would take it (bound, a valid destination, the same udpd): posted, as Linux
            # hands the datagram to IP and returns; a pending error goes to the next call
            self._stack.post("sendto", self._sid, [host, port], data)
            return len(data)
        # a datagram leaves whole or not at all: udpd answers at once (no send buffer to wait for)
        (sent, state), _ = self._call("sendto", host, port, data=data)
        if state is not None:
            self._state = state       # bound just now (an ephemeral port)
        return sent

    def _may_post(self, host: str | None, port: int, size: int) -> bool:
        """Whether udpd's answer to this send is known to be its length: the socket is bound, the
        destination is no broadcast (SO_BROADCAST decides) and fits a loopback-bound source, the
        datagram fits, and the udpd that last answered still runs (else the call restores)."""
        state = self._state
        if state is None or not state[1] or size > MAX_PAYLOAD or self._closed:
            return False
        if host is None:
            if state[2] is None:
                return False                              # EDESTADDRREQ, from udpd
        elif port == 0 or host.endswith(".255") or (state[0][0] == 127 and not host.startswith("127.")):
            return False
        incarnation = self._incarnation
        return incarnation is not None and incarnation == self._stack.incarnation()

    def _keep(self, reply) -> None:
        self._pending.append((reply.value, reply.payload[0] if reply.payload else b""))
        self._hold_readable()

    def _hold_readable(self) -> None:
        """A datagram libsock holds (an interrupted receive's) keeps the descriptor readable."""
        if self._mirror is not None:
            self._mirror.hold(bool(self._pending))

    def _receive(self, bufsize: int, flags: int) -> tuple[bytes, tuple[str, int]]:
        if not isinstance(bufsize, int):
            raise TypeError("'%s' object cannot be interpreted as an integer" % type(bufsize).__name__)
        if bufsize < 0:
            raise ValueError("negative buffersize in recvfrom")
        if self._pending and not self._closed:
            (host, port, _length), data = self._pending[0]
            if not flags & MSG_PEEK:
                self._pending.pop(0)
                self._hold_readable()
            return data[:bufsize], (host, port)
        keep = None if flags & MSG_PEEK else self._keep
        (host, port, _length), data = self._blocking_call("recv", bufsize, bool(flags & MSG_PEEK),
                                                           flags=flags, keep=keep)
        return data or b"", (host, port)

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, tuple[str, int]]:
        return self._receive(bufsize, flags)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        return self._receive(bufsize, flags)[0]

    def recvfrom_into(self, buffer, nbytes: int = 0, flags: int = 0) -> tuple[int, tuple[str, int]]:
        view = memoryview(buffer).cast("B")
        if nbytes < 0:
            raise ValueError("negative buffersize in recvfrom_into")
        nbytes = nbytes or len(view)
        if nbytes > len(view):
            raise ValueError("nbytes is greater than the length of the buffer")
        data, address = self._receive(nbytes, flags)
        view[:len(data)] = data
        return len(data), address

    def recv_into(self, buffer, nbytes: int = 0, flags: int = 0) -> int:
        return self.recvfrom_into(buffer, nbytes, flags)[0]

    def setsockopt(self, level: int, optname: int, value, optlen: int | None = None) -> None:
        if isinstance(value, (bytes, bytearray)):
            value = int.from_bytes(bytes(value)[:4].ljust(4, b"\0"), "little")
        elif isinstance(value, bool) or not isinstance(value, int):
            value = int(value)
        self._state, _ = self._call("setsockopt", level, optname, value)

    def getsockopt(self, level: int, optname: int, buflen: int = 0):
        value, _ = self._call("getsockopt", level, optname)
        if buflen:
            return int(value).to_bytes(4, "little", signed=True)[:buflen].ljust(buflen, b"\0")
        return value

    def getsockname(self) -> tuple[str, int]:
        if self._closed:
            raise OSError(errno.EBADF, "Bad file descriptor")
        if self._state is None:
            return "0.0.0.0", 0
        return _address_text(self._state[0]), self._state[1]

    def getpeername(self) -> tuple[str, int]:
        if self._closed:
            raise OSError(errno.EBADF, "Bad file descriptor")
        if self._state is None or self._state[2] is None:
            raise OSError(errno.ENOTCONN, os.strerror(errno.ENOTCONN))
        return _address_text(self._state[2]), self._state[3]

    def fileno(self) -> int:
        """A real descriptor, readable while a datagram (or an error) waits and always writable,
        for select, poll, epoll, selectors and asyncio, as libsock's TCP sockets have
        (_readiness.py).  Made on the first call; -1 once closed, as in CPython."""
        if self._closed:
            return -1
        self._mirror = _readiness.mine(self._mirror)
        if self._mirror is None:
            notifier = _readiness.notifier(self._stack, _readiness.DatagramNotifier)
            self._mirror = notifier.watch(self._sid, self._incarnation or self._stack.incarnation())
            self._watch()
            self._hold_readable()
        return self._mirror.fd

    def _watch(self, again: bool = True) -> None:
        """udpd tells this process of the socket's readiness from now on; its answer carries
        the socket's state, shown before this returns."""
        notifier = _readiness.notifier(self._stack, _readiness.DatagramNotifier)
        self._mirror.renew()        # (a udpd of another incarnation, or another instance, counted)
        try:
            self._stack.call("watch", self._sid, [notifier.identity], 0)
            self._mirror.incarnation = self._stack.answered_by
        except _Restarted:          # udpd does not know it (restarted; or the posted "socket" of
            if again:               # another thread's channel is not there yet): restore, once
                self._restore(watch=False)
                self._watch(again=False)
            else:
                self._mirror.force(True, True)
        except OSError:
            self._mirror.force(True, True)      # the next call will tell what is wrong

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._mirror is not None:
            self._mirror.close()
        try:     # waits: the port is free once close() returns
            self._stack.call("close", self._sid, [], 0)
        except (OSError, _Restarted, zmq.ZMQError):
            pass

    def detach(self) -> int:
        raise OSError(errno.EOPNOTSUPP, "libsock sockets have no descriptor to detach")

    def get_inheritable(self) -> bool:
        return False

    def set_inheritable(self, inheritable: bool) -> None:
        if self._closed:
            raise OSError(errno.EBADF, "Bad file descriptor")

    def __enter__(self) -> "DatagramSocket":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if not self._closed:
                self.close()
        except Exception:
            pass
