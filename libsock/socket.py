"""The BSD socket object an application holds, mirroring Python's `socket`.

Each method is one call across to tcpd (`sys_socketcall`), except what lives
in the socket object itself, as in Linux's `struct socket`: the blocking mode
and timeout, and the SS_* state that decides what connect() may do.
"""
from __future__ import annotations

import errno
import io
import os
import secrets
import socket as _std
import struct
import time
import weakref

import zmq

from libsock import _readiness, _rpc
from libsock._rpc import stack
from proto.ipc.messages import NAMED_SOCKET_IDS
from proto.tcp.connection import SS_CONNECTED, SS_CONNECTING, SS_UNCONNECTED

AF_INET = _std.AF_INET
SOCK_STREAM = _std.SOCK_STREAM
SOL_SOCKET, IPPROTO_TCP, IPPROTO_IP = _std.SOL_SOCKET, _std.IPPROTO_TCP, _std.IPPROTO_IP
SO_REUSEADDR, SO_KEEPALIVE, SO_RCVBUF, SO_SNDBUF = _std.SO_REUSEADDR, _std.SO_KEEPALIVE, _std.SO_RCVBUF, _std.SO_SNDBUF
SO_ERROR, SO_LINGER, SO_TYPE = _std.SO_ERROR, _std.SO_LINGER, _std.SO_TYPE
TCP_NODELAY, TCP_MAXSEG = _std.TCP_NODELAY, _std.TCP_MAXSEG
TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT = _std.TCP_KEEPIDLE, _std.TCP_KEEPINTVL, _std.TCP_KEEPCNT
TCP_CONGESTION = _std.TCP_CONGESTION
SHUT_RD, SHUT_WR, SHUT_RDWR = _std.SHUT_RD, _std.SHUT_WR, _std.SHUT_RDWR
MSG_PEEK, MSG_DONTWAIT, MSG_WAITALL = _std.MSG_PEEK, _std.MSG_DONTWAIT, _std.MSG_WAITALL
SOMAXCONN = _std.SOMAXCONN
SO_REUSEPORT = _std.SO_REUSEPORT          # (tcpd answers ENOPROTOOPT: one listener per port)
SOCK_NONBLOCK, SOCK_CLOEXEC = _std.SOCK_NONBLOCK, _std.SOCK_CLOEXEC
INADDR_ANY = 0
has_ipv6 = False

timeout = _std.timeout            # TimeoutError, as in Python 3.10+
error = OSError
gaierror, herror = _std.gaierror, _std.herror
inet_aton, inet_ntoa, inet_pton, inet_ntop = _std.inet_aton, _std.inet_ntoa, _std.inet_pton, _std.inet_ntop
getservbyname, getservbyport, gethostname = _std.getservbyname, _std.getservbyport, _std.gethostname
htons, ntohs, htonl, ntohl = _std.htons, _std.ntohs, _std.htonl, _std.ntohl
getdefaulttimeout, setdefaulttimeout = _std.getdefaulttimeout, _std.setdefaulttimeout
SocketIO = _std.SocketIO


_SEND_CHUNK = 1 << 20
# How long tcpd's word on the send buffer's room holds for posted sends.  A reset
# that came earlier than this before a send is that send's error (as on Linux);
# one that came within it is the next call's, as if it had come just after.
CREDIT_TTL = 0.010
_POLLIN, _POLLOUT = 0x1, 0x4
_OWN_TIMEOUT = object()           # a call waits as long as its socket's timeout says


def _resolve(address, call: str) -> tuple[str, int]:
    """A numeric (host, port) pair, as CPython reads one for `call`: "" is INADDR_ANY, and the
    forms inet_aton takes ("127.1") are addresses; a host name resolves through /etc/hosts, then
    DNS over the stack (libsock/names.py): its first address."""
    if not isinstance(address, tuple) or len(address) != 2:
        raise TypeError("AF_INET address must be a tuple (host, port)")
    host, port = address
    if not isinstance(port, int) or isinstance(port, bool):
        raise TypeError(f"'{type(port).__name__}' object cannot be interpreted as an integer")
    if not 0 <= port <= 65535:
        raise OverflowError(f"{call}(): port must be 0-65535.")
    if isinstance(host, bytes):
        host = host.decode()
    if host == "":
        host = "0.0.0.0"
    elif host == "<broadcast>":
        host = "255.255.255.255"
    elif host == "localhost":
        host = "127.0.0.1"          # the stack loops 127.0.0.0/8 back, as Linux's lo
    try:
        return _std.inet_ntoa(_std.inet_aton(host)), port
    except (OSError, ValueError):   # (ValueError: an embedded NUL)
        pass
    from libsock import names
    return names.lookup(host).addresses[0], port


_owned: "weakref.WeakSet[socket]" = weakref.WeakSet()     # sockets this process opened


def _close_owned() -> None:
    """At exit, as the kernel closes a process's descriptors: close what this process
    opened and left open (inherited sockets stay open for the process they came from)."""
    for sock in list(_owned):
        if sock._pid == os.getpid() and not sock._closed:
            sock._really_close()


_rpc.exit_hooks.append(_close_owned)


def _announce_fork() -> None:
    """Just before os.fork(): the child shares this process's sockets, as the kernel shares
    descriptors.  tcpd is told, so that a close from this process right after the fork (a
    forking server's) waits a moment for the child to take its copy (services/tcp/owners.py)."""
    groups: dict[tuple, list] = {}
    for sock in list(_owned):
        if not sock._closed and sock._sid is not None:
            groups.setdefault((id(sock._stack), sock._sid[0]), []).append(sock)
    for socks in groups.values():
        # the child claims its copies with a secret only a process forked from here knows
        # (Stack._channel posts "inherit"): a program this one merely starts has not got it
        token = secrets.token_hex(16)
        try:
            mark = socks[0]._stack.post("fork", socks[0]._sid, [[sock._sid[1] for sock in socks], token])
            socks[0]._stack.fork_token = (os.getpid(), socks[0]._sid, token, mark)
        except (OSError, zmq.ZMQError):
            pass


os.register_at_fork(before=_announce_fork)


# a socket's pending error (Linux's sk_err): reported by one call, then gone
_REPORTED_ONCE = frozenset({errno.ECONNRESET, errno.ECONNREFUSED, errno.ETIMEDOUT, errno.ECONNABORTED,
                            errno.EHOSTUNREACH, errno.ENETUNREACH})


class socket:
    """An AF_INET, SOCK_STREAM socket on the netstack."""

    # what a recv or accept took after its caller was interrupted by a signal (see _keep_late):
    # handed to the next recv or accept, in order, as the kernel would still hold it
    _unread: bytes = b""
    _late_errno: int = 0
    _accepted: tuple = ()

    def __new__(cls, family: int = -1, type: int = -1, proto: int = -1, fileno=None):
        """AF_UNIX sockets, and a kernel socket's descriptor, are the kernel's (local IPC: asyncio's
        self-pipe, a supervisor's inherited listener); everything else is the stack's."""
        if family == _std.AF_UNIX or (fileno is not None and cls is socket and not _readiness.is_mirror(fileno)):
            return _std.socket(family, type, proto, fileno)
        if cls is socket and family in (-1, AF_INET) and isinstance(type, int) and type != -1 \
                and type & 0xF == _std.SOCK_DGRAM:
            from libsock.udp import DatagramSocket      # UDP: udpd's socket (libsock/udp.py)
            return DatagramSocket(AF_INET, type, 0 if proto == -1 else proto, fileno)
        return super().__new__(cls)

    def __init__(self, family: int = -1, type: int = -1, proto: int = -1, fileno=None):
        if fileno is not None:
            raise OSError(errno.EOPNOTSUPP, "libsock cannot adopt its own descriptor as a socket")
        family = AF_INET if family == -1 else family
        type = SOCK_STREAM if type == -1 else type
        proto = 0 if proto == -1 else proto
        if family != AF_INET:
            raise OSError(errno.EAFNOSUPPORT, os.strerror(errno.EAFNOSUPPORT))
        if type & 0xF != SOCK_STREAM:
            raise OSError(errno.EPROTONOSUPPORT, "libsock supports SOCK_STREAM only")
        if proto not in (0, IPPROTO_TCP):
            raise OSError(errno.EPROTONOSUPPORT, os.strerror(errno.EPROTONOSUPPORT))
        self._stack = stack()
        self._proto = proto
        self._timeout = 0.0 if type & SOCK_NONBLOCK else getdefaulttimeout()
        self._state = SS_UNCONNECTED
        self._io_refs = 0
        self._closed = False
        self._mirror = None       # fileno()'s descriptor, made on the first call (_readiness.py)
        self._sid = None
        self._credit = 0          # bytes send() may post without waiting (tcpd's last word on the room)
        self._credit_until = 0.0  # ... until then (CREDIT_TTL after that word)
        # socket() is posted, under an id of our choosing: nothing to wait for (a call
        # fewer per connection); any later call of this socket, from any thread, comes after it
        self._sid = [self._stack.wait_for_tcpd(_rpc.STARTUP_WAIT)[0], NAMED_SOCKET_IDS + secrets.randbits(62)]
        self._born = self._last_post = self._stack.post("socket", self._sid, [])
        self._pid = os.getpid()
        _owned.add(self)

    @classmethod
    def _adopt(cls, sid) -> "socket":
        sock = cls.__new__(cls)
        sock._stack, sock._timeout, sock._state = stack(), getdefaulttimeout(), SS_CONNECTED
        sock._io_refs, sock._closed, sock._mirror, sock._sid, sock._credit = 0, False, None, sid, 0
        sock._credit_until = 0.0
        sock._last_post = sock._born = None
        sock._pid = os.getpid()
        _owned.add(sock)
        return sock

    family = property(lambda self: _std.AddressFamily.AF_INET)
    type = property(lambda self: _std.SocketKind.SOCK_STREAM)
    proto = property(lambda self: getattr(self, "_proto", 0))

    def __repr__(self) -> str:
        state = "closed" if self._closed else self._state
        return f"<libsock.socket sid={self._sid and self._sid[1]} {state} timeout={self._timeout}>"

    # -- plumbing -------------------------------------------------------------

    def _call(self, op: str, *args, timeout: float | None = 0.0, data: bytes | None = None):
        if self._closed:
            raise OSError(errno.EBADF, "Bad file descriptor")
        if self._born is not None and self._stack.after_posts(self._sid, self._born):
            self._born = None
        keep = None
        if op == "accept" or op == "recv" and not args[1]:      # (a MSG_PEEK takes nothing away)
            keep = self._keep_late
        value, data, self._credit = self._stack.call(op, self._sid, list(args), timeout, data, keep)
        self._credit_until = time.monotonic() + CREDIT_TTL
        return value, data

    def _keep_late(self, reply) -> None:
        """A recv or accept answered as its caller was interrupted: keep what it took."""
        if reply.errno:
            if reply.errno in _REPORTED_ONCE:       # the socket's error, which tcpd gave away: next
                self._late_errno = reply.errno
        elif reply.payload and reply.payload[0]:
            self._unread += reply.payload[0]
        elif isinstance(reply.value, list) and len(reply.value) in (2, 3):
            self._accepted += (reply.value,)
        self._hold_readable()

    def _hold_readable(self) -> None:
        """What libsock holds for the next recv or accept keeps fileno() readable."""
        if self._mirror is not None:
            self._mirror.hold(bool(self._unread or self._late_errno or self._accepted))

    def _after_posts(self) -> None:
        """Before a call that changes what the peer gets (send, shutdown, close, setsockopt):
        what this socket posted earlier, perhaps from another thread, is handled first."""
        if self._last_post is not None and self._stack.after_posts(self._sid, self._last_post):
            self._last_post = None

    def _blocking_call(self, op: str, *args, data: bytes | None = None, flags: int = 0, wait=_OWN_TIMEOUT):
        """A call that may sleep: honours the timeout (or `wait`, what is left of one) and
        MSG_DONTWAIT like CPython."""
        if wait is _OWN_TIMEOUT:
            wait = self._timeout
        if flags & MSG_DONTWAIT:
            wait = 0.0
        try:
            return self._call(op, *args, timeout=wait, data=data)
        except BlockingIOError:
            if wait:              # the timeout passed while the call slept
                raise timeout("timed out") from None
            raise

    # -- blocking mode ----------------------------------------------------------

    def settimeout(self, value: float | None) -> None:
        if self._closed:
            raise OSError(errno.EBADF, "Bad file descriptor")
        if value is not None:
            value = float(value)
            if value < 0:
                raise ValueError("Timeout value out of range")
        self._timeout = value

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self.settimeout(None if flag else 0.0)

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    # -- the calls ----------------------------------------------------------------

    def bind(self, address) -> None:
        host, port = _resolve(address, "bind")
        self._call("bind", host, port)

    def listen(self, backlog: int = min(SOMAXCONN, 128)) -> None:
        self._call("listen", max(0, int(backlog)))

    def accept(self) -> tuple["socket", tuple[str, int]]:
        if self._accepted and not self._closed:
            accepted, self._accepted = self._accepted[0], self._accepted[1:]
            self._hold_readable()
        else:
            accepted, _ = self._blocking_call("accept")
        child, peer = accepted[0], accepted[1]
        sock = socket._adopt(child)
        if len(accepted) == 3 and self._mirror is not None:      # tcpd watches it for us already
            sock._mirror = _readiness.notifier(self._stack).watch(child[1], child[0])
            sock._mirror.apply(*accepted[2])
        return sock, (peer[0], peer[1])

    def connect(self, address) -> None:
        err = self.connect_ex(address, raising=True)
        if err:
            raise OSError(err, os.strerror(err))

    def connect_ex(self, address, raising: bool = False) -> int:
        host, port = _resolve(address, "connect_ex" if not raising else "connect")
        # a connect already under way (non-blocking, or one whose timeout passed) is answered at
        # once when CPython's descriptor is non-blocking (a timeout set): EALREADY, or its outcome;
        # a blocking socket waits for the handshake (Linux's inet_wait_for_connect).  The SS_*
        # state is the engine's: every answer to connect tells it, and it is kept here
        wait = 0.0 if self._state == SS_CONNECTING and self._timeout is not None else self._timeout
        try:
            (self._state, _) = self._call("connect", host, port, timeout=wait)
        except OSError as exc:
            self._state = getattr(exc, "told", None) or self._state
            if isinstance(exc, BlockingIOError) and wait:     # slept for the whole timeout
                if raising:
                    raise timeout("timed out") from None
                return errno.EAGAIN if exc.errno == errno.EAGAIN else exc.errno
            if raising:
                raise
            return exc.errno
        return 0

    def send(self, data, flags: int = 0) -> int:
        return self._send(data, flags, self._timeout)

    def _send(self, data, flags: int, wait: float | None) -> int:
        data = bytes(memoryview(data)[:_SEND_CHUNK]) if not isinstance(data, bytes) or len(data) > _SEND_CHUNK \
            else data
        size = len(data)
        self._after_posts()
        if 0 < size <= self._credit and not flags & ~MSG_DONTWAIT and not self._closed \
                and time.monotonic() < self._credit_until:
            # the send buffer has room for it: Linux would copy it in and return at once
            self._credit -= size
            self._last_post = self._stack.post("send", self._sid, [0], data)
            return size
        sent, _ = self._blocking_call("send", flags & ~MSG_DONTWAIT, data=data, flags=flags, wait=wait)
        return sent

    def sendall(self, data, flags: int = 0) -> None:
        """As CPython's: the timeout bounds the whole call, not each send within it."""
        if self._closed:                         # also with nothing to send, as CPython's
            raise OSError(errno.EBADF, "Bad file descriptor")
        view = memoryview(data).cast("B")
        total = len(view)
        offset = 0
        deadline = time.monotonic() + self._timeout if self._timeout else None
        wait = self._timeout
        while offset < total:
            if deadline is not None:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    raise timeout("timed out")
            offset += self._send(view[offset:offset + _SEND_CHUNK], flags, wait)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        if (self._unread or self._late_errno) and not self._closed:
            return self._recv_late(bufsize, flags)
        if flags & MSG_WAITALL and not flags & MSG_PEEK:
            return self._recv_all(bufsize, flags)
        _, data = self._blocking_call("recv", bufsize, flags & MSG_PEEK, flags=flags)
        if self._unread and not flags & MSG_PEEK:
            # an interrupted recv's answer, read while this one waited: its bytes came first
            data = self._unread + (data or b"")
            data, self._unread = data[:bufsize], data[bufsize:]
            self._hold_readable()
        return data or b""

    def _recv_late(self, bufsize: int, flags: int) -> bytes:
        """What an interrupted recv took, first (its bytes came before any still in tcpd)."""
        if not self._unread:
            err, self._late_errno = self._late_errno, 0
            self._hold_readable()
            raise OSError(err, os.strerror(err))
        data = self._unread[:bufsize]
        if not flags & MSG_PEEK:
            self._unread = self._unread[len(data):]
            self._hold_readable()
        return data

    def _recv_all(self, bufsize: int, flags: int) -> bytes:
        """MSG_WAITALL: fill the buffer, unless EOF or an error comes first (Linux then returns
        what it copied).  With a timeout, or non-blocking, CPython's descriptor is non-blocking
        inside, and the kernel answers MSG_WAITALL with what it has: one recv, as there."""
        if self._timeout is not None or flags & MSG_DONTWAIT:
            return self.recv(bufsize, flags & ~MSG_WAITALL)
        chunks, got = [], 0
        while got < bufsize:
            try:
                chunk = self.recv(bufsize - got, flags & ~MSG_WAITALL)
            except OSError:
                if chunks:
                    break
                raise
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def recv_into(self, buffer, nbytes: int = 0, flags: int = 0) -> int:
        view = memoryview(buffer).cast("B")
        if nbytes < 0:
            raise ValueError("negative buffersize in recv_into")
        nbytes = nbytes or len(view)
        if nbytes > len(view):
            raise ValueError("buffer too small for requested bytes")
        data = self.recv(nbytes, flags)
        view[:len(data)] = data
        return len(data)

    def shutdown(self, how: int) -> None:
        if how not in (SHUT_RD, SHUT_WR, SHUT_RDWR):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        self._after_posts()
        self._call("shutdown", how)

    def setsockopt(self, level: int, optname: int, value, optlen: int | None = None) -> None:
        if isinstance(value, (bytes, bytearray)):
            if level == SOL_SOCKET and optname == SO_LINGER:
                value = list(struct.unpack("ii", bytes(value)[:8]))
            else:
                value = int.from_bytes(bytes(value)[:4].ljust(4, b"\0"), "little")
        elif isinstance(value, bool) or not isinstance(value, int):
            value = int(value)
        self._after_posts()
        self._call("setsockopt", level, optname, value)

    def getsockopt(self, level: int, optname: int, buflen: int = 0):
        value, _ = self._call("getsockopt", level, optname)
        if isinstance(value, bytes):         # TCP_CONGESTION: a name, NUL-padded to buflen
            return value[:buflen].ljust(buflen, b"\0") if buflen else int.from_bytes(value[:4], "little")
        if isinstance(value, list):          # SO_LINGER: (l_onoff, l_linger)
            packed = struct.pack("ii", *value)
            return packed[:buflen] if buflen else value[0]
        if buflen:
            return int(value).to_bytes(4, "little", signed=True)[:buflen].ljust(buflen, b"\0")
        return value

    def getsockname(self) -> tuple[str, int]:
        (host, port), _ = self._call("getsockname")
        return host, port

    def getpeername(self) -> tuple[str, int]:
        (host, port), _ = self._call("getpeername")
        return host, port

    def fileno(self) -> int:
        """A real descriptor whose readability and writability follow the socket, for
        select, poll, epoll, selectors and asyncio (see _readiness.py).  Made on the first
        call: tcpd tells this process of the socket's readiness from then on.  -1 once
        closed, as in CPython."""
        if self._closed:
            return -1
        self._mirror = _readiness.mine(self._mirror)
        if self._mirror is None:
            if self._born is not None and self._stack.after_posts(self._sid, self._born):
                self._born = None
            notifier = _readiness.notifier(self._stack)
            self._mirror = notifier.watch(self._sid[1], self._sid[0])
            try:        # its answer carries the socket's state, shown before fileno() returns
                self._stack.call("watch", self._sid, [notifier.identity], 0)
            except OSError:
                self._mirror.force(True, True)      # the next call will tell what is wrong
            self._hold_readable()
        return self._mirror.fd

    def close(self) -> None:
        if self._closed:
            return
        if self._io_refs > 0:       # makefile() objects keep the socket open, as in CPython
            self._closing = True
            return
        self._really_close()

    def _really_close(self) -> None:
        self._closed = True
        if self._mirror is not None:
            self._mirror.close()
        if self._sid is None:
            return
        try:
            self._after_posts()
            if self._state == SS_CONNECTED or self._state == SS_CONNECTING:
                # a connection's close is posted: Linux's close returns at once and finishes in the background
                # (libsock's exit hook makes sure the call has left the process)
                self._stack.post("close", self._sid, [])
            else:
                # a listener's or a bound socket's port must be free once close() returns,
                # also for a bind() from another thread (whose calls take another channel)
                self._stack.call("close", self._sid, [], 0)
        except (OSError, zmq.ZMQError):
            pass

    # -- the rest of CPython's socket object, in terms of the calls above ---------

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, None]:
        """A connected TCP socket reports no address (the kernel fills none in): (data, None)."""
        return self.recv(bufsize, flags), None

    def recvfrom_into(self, buffer, nbytes: int = 0, flags: int = 0) -> tuple[int, None]:
        return self.recv_into(buffer, nbytes, flags), None

    def sendto(self, data, flags_or_address, address=None) -> int:
        """Linux's TCP ignores the address (tcp_sendmsg): a send."""
        return self.send(data, flags_or_address if address is not None else 0)

    def sendfile(self, file, offset: int = 0, count: int | None = None) -> int:
        """As CPython's send()-based sendfile: the file's bytes from `offset`, `count` of them
        or up to its end; the file's position is left after the last byte sent."""
        if "b" not in getattr(file, "mode", "b"):
            raise ValueError("file should be opened in binary mode")
        if count is not None:
            if not isinstance(count, int):
                raise TypeError(f"count must be a positive integer (got {count!r})")
            if count <= 0:
                raise ValueError(f"count must be a positive integer (got {count!r})")
        if self.gettimeout() == 0:
            raise ValueError("non-blocking sockets are not supported")
        if offset:
            file.seek(offset)
        total = 0
        try:
            while count is None or total < count:
                block = file.read(_SEND_CHUNK if count is None else min(_SEND_CHUNK, count - total))
                if not block:
                    break
                self.sendall(block)
                total += len(block)
            return total
        finally:
            if total > 0 and hasattr(file, "seek"):
                file.seek(offset + total)

    def get_inheritable(self) -> bool:
        """The flag of fileno()'s descriptor (not inherited, as CPython's sockets start)."""
        if self._closed:
            raise OSError(errno.EBADF, "Bad file descriptor")
        return os.get_inheritable(self.fileno())

    def set_inheritable(self, inheritable: bool) -> None:
        if self._closed:
            raise OSError(errno.EBADF, "Bad file descriptor")
        os.set_inheritable(self.fileno(), inheritable)

    def detach(self) -> int:
        raise OSError(errno.EOPNOTSUPP, "libsock sockets have no descriptor to detach")

    def _decref_socketios(self) -> None:
        if self._io_refs > 0:
            self._io_refs -= 1
        if getattr(self, "_closing", False) and self._io_refs == 0:
            self._really_close()

    def makefile(self, mode="r", buffering=None, *, encoding=None, errors=None, newline=None):
        """As CPython's socket.makefile: a SocketIO raw stream, buffered and wrapped as asked."""
        if not set(mode) <= {"r", "w", "b"}:
            raise ValueError(f"invalid mode {mode!r} (only r, w, b allowed)")
        writing, reading, binary = "w" in mode, "r" in mode or "w" not in mode, "b" in mode
        rawmode = ("r" if reading else "") + ("w" if writing else "")
        raw = SocketIO(self, rawmode)
        self._io_refs += 1
        if buffering is None:
            buffering = -1
        if buffering < 0:
            buffering = io.DEFAULT_BUFFER_SIZE
        if buffering == 0:
            if not binary:
                raise ValueError("unbuffered streams must be binary")
            return raw
        if reading and writing:
            buffer = io.BufferedRWPair(raw, raw, buffering)
        elif reading:
            buffer = io.BufferedReader(raw, buffering)
        else:
            buffer = io.BufferedWriter(raw, buffering)
        if binary:
            return buffer
        text = io.TextIOWrapper(buffer, encoding, errors, newline)
        text.mode = mode
        return text

    def __enter__(self) -> "socket":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if not self._closed and self._sid is not None:
                self.close()
        except Exception:
            pass
