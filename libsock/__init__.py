"""libsock: Python's `socket` module, for AF_INET (SOCK_STREAM and SOCK_DGRAM), on netstack.

    import libsock as socket

The stack is found through NETSTACK_RUN (default /run/netstack/default).
"""
from __future__ import annotations

import errno
import socket as _std

# Every name of CPython's socket module, so that real libraries find what they import
# (NI_*, AI_*, IPPROTO_*, TCP_*, SO_*, MSG_*, the error aliases, inet_* and the byte-order
# helpers are the kernel's own); what libsock does itself replaces it below.  What the
# stack cannot do raises Linux's errno (socket(AF_INET6) -> EAFNOSUPPORT), never
# AttributeError.  AF_UNIX sockets are the kernel's: local IPC, not the network.
globals().update({name: value for name, value in vars(_std).items() if not name.startswith("__")})
__all__ = list(_std.__all__)

from libsock.socket import *          # noqa: F401,F403,E402  (the constants and the socket class)
from libsock.socket import (AF_INET, IPPROTO_TCP, SOCK_STREAM, SOL_SOCKET, SO_REUSEADDR,  # noqa: E402
                            socket, timeout)
from libsock.udp import IPPROTO_UDP, MSG_TRUNC, SO_BROADCAST, SOCK_DGRAM, DatagramSocket  # noqa: F401,E402
from libsock.names import (gethostbyaddr, gethostbyname, gethostbyname_ex, getaddrinfo,  # noqa: F401,E402
                           getnameinfo)

SocketType = socket
_GLOBAL_DEFAULT_TIMEOUT = _std._GLOBAL_DEFAULT_TIMEOUT
AddressFamily, SocketKind = _std.AddressFamily, _std.SocketKind
AI_PASSIVE, AI_NUMERICHOST, AI_NUMERICSERV = _std.AI_PASSIVE, _std.AI_NUMERICHOST, _std.AI_NUMERICSERV
AF_UNSPEC = _std.AF_UNSPEC
AF_INET6 = _std.AF_INET6          # the name exists (libraries read it); socket(AF_INET6) is EAFNOSUPPORT
AI_CANONNAME = _std.AI_CANONNAME
EAI_NONAME, EAI_AGAIN, EAI_SERVICE, EAI_FAMILY = _std.EAI_NONAME, _std.EAI_AGAIN, _std.EAI_SERVICE, _std.EAI_FAMILY
EAI_NODATA = getattr(_std, "EAI_NODATA", -5)
NI_NUMERICHOST, NI_NUMERICSERV, NI_NAMEREQD, NI_NOFQDN, NI_DGRAM = (
    _std.NI_NUMERICHOST, _std.NI_NUMERICSERV, _std.NI_NAMEREQD, _std.NI_NOFQDN, _std.NI_DGRAM)


def create_connection(address, timeout=_GLOBAL_DEFAULT_TIMEOUT, source_address=None, *, all_errors=False):
    """Connect to (host, port) and return the socket, as socket.create_connection."""
    host, port = address
    errors = []
    for family, kind, proto, _, addr in getaddrinfo(host, port, 0, SOCK_STREAM):
        sock = None
        try:
            sock = socket(family, kind, proto)
            if timeout is not _GLOBAL_DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(addr)
            return sock
        except OSError as exc:
            errors.append(exc)
            if sock is not None:
                sock.close()
    if all_errors:
        raise ExceptionGroup("create_connection failed", errors)
    raise errors[0]


def create_server(address, *, family=AF_INET, backlog=None, reuse_port=False, dualstack_ipv6=False):
    """A listening socket bound to address, with SO_REUSEADDR as CPython sets it."""
    if reuse_port:     # CPython sets SO_REUSEPORT; tcpd refuses it (one listener per port)
        raise OSError(errno.ENOPROTOOPT,
                      "Protocol not available (libsock: SO_REUSEPORT)")
    if dualstack_ipv6:
        raise ValueError("dualstack_ipv6 not supported on this platform")
    sock = socket(family, SOCK_STREAM)
    try:
        if family != _std.AF_UNIX:
            sock.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
        sock.bind(address)
        if backlog is None:
            sock.listen()
        else:
            sock.listen(backlog)
        return sock
    except BaseException:
        sock.close()
        raise


def socketpair(family=None, type=SOCK_STREAM, proto=0):
    """As CPython's: AF_UNIX by default, which is the kernel's (asyncio's self-pipe is one).
    AF_INET gives two stack sockets, made as CPython makes them where AF_UNIX is missing:
    a listener on 127.0.0.1 (which the stack loops back), a connect to it, an accept."""
    if family is None or family == _std.AF_UNIX:
        return _std.socketpair(_std.AF_UNIX, type, proto)
    with create_server(("127.0.0.1", 0)) as listener:
        a = socket(family, type, proto)
        try:
            a.connect(listener.getsockname())
            b, peer = listener.accept()
        except BaseException:
            a.close()
            raise
        # as CPython's fallback: the connection accepted must be the one made, not another
        # program's that connected to the listener first
        if peer != a.getsockname() or a.getpeername() != listener.getsockname():
            a.close()
            b.close()
            raise ConnectionError("Unexpected peer connection")
    return a, b


def fromfd(fd: int, family: int, type: int, proto: int = 0):
    """A kernel socket for a kernel descriptor (AF_UNIX...); a libsock descriptor cannot be
    adopted (it only mirrors its socket's readiness): EOPNOTSUPP, as detach()."""
    if family == AF_INET:
        raise OSError(errno.EOPNOTSUPP,
                      "libsock cannot adopt a descriptor as an AF_INET socket")
    return _std.fromfd(fd, family, type, proto)


def getfqdn(name: str = "") -> str:
    """As socket.getfqdn when no fully qualified name is known: the name itself, or for the
    local host ("" or 0.0.0.0) the host's name.  (libsock resolves no names.)"""
    name = name.strip()
    return _std.gethostname() if name in ("", "0.0.0.0") else name


def has_dualstack_ipv6() -> bool:
    return False
