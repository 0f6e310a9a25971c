"""libsock: Python's `socket` module, for AF_INET / SOCK_STREAM, on netstack.

    import libsock as socket

The stack is found through NETSTACK_RUN (default /run/netstack/default).
"""
from __future__ import annotations

import socket as _std

from libsock.socket import *          # noqa: F401,F403  (the constants and the socket class)
from libsock.socket import (AF_INET, IPPROTO_TCP, SOCK_STREAM, SOL_SOCKET, SO_REUSEADDR, _resolve,
                            socket, timeout)

SocketType = socket
_GLOBAL_DEFAULT_TIMEOUT = _std._GLOBAL_DEFAULT_TIMEOUT
AddressFamily, SocketKind = _std.AddressFamily, _std.SocketKind
AI_PASSIVE, AI_NUMERICHOST, AI_NUMERICSERV = _std.AI_PASSIVE, _std.AI_NUMERICHOST, _std.AI_NUMERICSERV
AF_UNSPEC = _std.AF_UNSPEC
EAI_NONAME = _std.EAI_NONAME


def getaddrinfo(host, port, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0):
    """Numeric addresses only (and localhost): [(AF_INET, SOCK_STREAM, IPPROTO_TCP, '', (host, port))]."""
    if family not in (0, AF_INET):
        raise _std.gaierror(_std.EAI_FAMILY, "ai_family not supported")
    if type not in (0, SOCK_STREAM):
        raise _std.gaierror(_std.EAI_SOCKTYPE, "ai_socktype not supported")
    if host is None and port is None:
        raise _std.gaierror(_std.EAI_NONAME, "Name or service not known")
    if isinstance(port, bytes):
        port = port.decode()
    if isinstance(port, str):
        try:        # a service name from /etc/services, as the C library looks it up
            port = int(port) if port.isdigit() else _std.getservbyname(port, "tcp")
        except OSError:
            raise _std.gaierror(_std.EAI_SERVICE, "Servname not supported for ai_socktype") from None
    if port is None:
        port = 0
    if host is None:
        host = "0.0.0.0" if flags & AI_PASSIVE else "127.0.0.1"
    host, port = _resolve((host, port), "getaddrinfo")
    return [(AddressFamily.AF_INET, SocketKind.SOCK_STREAM, IPPROTO_TCP, "", (host, port))]


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
    if reuse_port:
        raise ValueError("SO_REUSEPORT not supported on this platform")
    if dualstack_ipv6 or family != AF_INET:
        raise ValueError("dualstack_ipv6 not supported on this platform")
    sock = socket(family, SOCK_STREAM)
    try:
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


def socketpair(family=AF_INET, type=SOCK_STREAM, proto=0):
    """Two connected sockets, made as CPython makes them where AF_UNIX is missing: a listener
    on 127.0.0.1 (which the stack loops back), a connect to it, an accept."""
    with create_server(("127.0.0.1", 0)) as listener:
        a = socket(family, type, proto)
        try:
            a.connect(listener.getsockname())
            b, _ = listener.accept()
        except BaseException:
            a.close()
            raise
    return a, b


def gethostbyname(hostname: str) -> str:
    """A numeric address (any form inet_aton takes) or localhost; host names are not resolved."""
    return _resolve((hostname, 0), "gethostbyname")[0]


def getfqdn(name: str = "") -> str:
    """As socket.getfqdn when no fully qualified name is known: the name itself, or for the
    local host ("" or 0.0.0.0) the host's name.  (libsock resolves no names.)"""
    name = name.strip()
    return _std.gethostname() if name in ("", "0.0.0.0") else name


def has_dualstack_ipv6() -> bool:
    return False
