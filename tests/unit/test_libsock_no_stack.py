"""libsock with no stack running: ENETDOWN at once, naming the run directory."""
from __future__ import annotations

import errno
import time

import pytest

import libsock


@pytest.fixture
def no_stack(monkeypatch, tmp_path):
    run_dir = tmp_path / "nothing-here"
    monkeypatch.setenv("NETSTACK_RUN", str(run_dir))
    return str(run_dir)


@pytest.mark.parametrize("call", [
    lambda: libsock.socket(),
    lambda: libsock.socket(libsock.AF_INET, libsock.SOCK_DGRAM),
    lambda: libsock.create_connection(("198.18.0.1", 80)),
    lambda: libsock.create_server(("0.0.0.0", 8080)),
])
def test_enetdown_at_once(no_stack, call):
    started = time.monotonic()
    with pytest.raises(OSError) as caught:
        call()
    assert caught.value.errno == errno.ENETDOWN
    assert no_stack in str(caught.value)
    assert time.monotonic() - started < 0.5


def test_enetdown_at_once_when_only_a_leftover_directory_is_there(no_stack, monkeypatch):
    """A run directory with no supervisord alive is no stack: no waiting for a tcpd to come back."""
    import os
    from libsock import _rpc
    os.makedirs(os.path.join(no_stack, "incarnations"))
    with open(os.path.join(no_stack, "supervisord.pid"), "w") as f:
        f.write("999999999")                      # no such process
    monkeypatch.setattr(_rpc.time, "sleep", lambda seconds: pytest.fail("libsock waited for a dead stack"))
    with pytest.raises(OSError) as caught:
        libsock.socket()
    assert caught.value.errno == errno.ENETDOWN and no_stack in str(caught.value)


def test_module_mirrors_socket():
    import socket
    for name in ("AF_INET", "SOCK_STREAM", "SOL_SOCKET", "SO_REUSEADDR", "SO_KEEPALIVE", "SO_RCVBUF", "SO_SNDBUF",
                 "SO_ERROR", "SO_LINGER", "IPPROTO_TCP", "TCP_NODELAY", "TCP_MAXSEG", "TCP_KEEPIDLE",
                 "TCP_KEEPINTVL", "TCP_KEEPCNT", "SHUT_RD", "SHUT_WR", "SHUT_RDWR", "MSG_PEEK", "MSG_DONTWAIT",
                 "MSG_WAITALL"):
        assert getattr(libsock, name) == getattr(socket, name), name
    assert libsock.timeout is socket.timeout and libsock.error is OSError
    assert libsock.inet_ntoa(libsock.inet_aton("198.18.0.2")) == "198.18.0.2"
    assert libsock.getaddrinfo("198.18.0.2", 80)[0][4] == ("198.18.0.2", 80)
    with pytest.raises(socket.gaierror):
        libsock.getaddrinfo("example.invalid", 80)


def test_the_names_standard_servers_use():
    """http.server calls getfqdn in server_bind; socketserver and others use the rest."""
    import socket
    for name in ("SO_REUSEPORT", "SOCK_NONBLOCK", "SOCK_CLOEXEC"):
        assert getattr(libsock, name) == getattr(socket, name), name
    assert libsock.SocketType is libsock.socket
    assert libsock.getfqdn() == libsock.getfqdn("0.0.0.0") == socket.gethostname()
    assert libsock.getfqdn(" 198.18.0.9 ") == "198.18.0.9"       # no name known: the name itself
    assert libsock.gethostbyname("127.1") == "127.0.0.1" and libsock.gethostbyname("localhost") == "127.0.0.1"
    with pytest.raises(socket.gaierror):
        libsock.gethostbyname("example.invalid")
    assert libsock.has_dualstack_ipv6() is False
    assert libsock.getaddrinfo("", 80)[0][4] == ("0.0.0.0", 80)


@pytest.mark.parametrize("args, code", [((libsock.AF_INET + 8,), errno.EAFNOSUPPORT),
                                        ((libsock.AF_INET, 3), errno.EPROTONOSUPPORT),      # SOCK_RAW
                                        ((libsock.AF_INET, libsock.SOCK_DGRAM, 6), errno.EPROTONOSUPPORT),
                                        ((libsock.AF_INET, libsock.SOCK_STREAM, 17), errno.EPROTONOSUPPORT)])
def test_families_and_types_libsock_lacks_are_refused_with_their_errno(no_stack, args, code):
    with pytest.raises(OSError) as caught:
        libsock.socket(*args)
    assert caught.value.errno == code
