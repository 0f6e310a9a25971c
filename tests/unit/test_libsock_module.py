"""libsock as a stand-in for CPython's socket module: every name exists, what the stack cannot
do is Linux's errno, names resolve through /etc/hosts, AF_UNIX is the kernel's (no stack needed)."""
from __future__ import annotations

import errno
import socket as kernel
import sys

import pytest

import libsock

libsock_names = sys.modules["libsock.names"]


def test_every_name_of_cpythons_socket_module_exists():
    missing = [name for name in kernel.__all__ if not hasattr(libsock, name)]
    assert missing == []
    for name in ("NI_NUMERICHOST", "NI_NUMERICSERV", "AI_PASSIVE", "AI_CANONNAME", "IPPROTO_IPV6",
                 "TCP_KEEPIDLE", "TCP_USER_TIMEOUT", "SO_REUSEPORT", "MSG_NOSIGNAL", "_GLOBAL_DEFAULT_TIMEOUT"):
        assert getattr(libsock, name) == getattr(kernel, name)
    assert libsock.error is OSError and libsock.timeout is TimeoutError


@pytest.mark.parametrize("family, kind, err", [
    (kernel.AF_INET6, kernel.SOCK_STREAM, errno.EAFNOSUPPORT),
    (kernel.AF_PACKET, kernel.SOCK_RAW, errno.EAFNOSUPPORT),
    (kernel.AF_INET, kernel.SOCK_RAW, errno.EPROTONOSUPPORT),        # (SOCK_DGRAM is udpd's)
])
def test_what_the_stack_cannot_do_is_an_errno(family, kind, err):
    with pytest.raises(OSError) as exc:
        libsock.socket(family, kind)
    assert exc.value.errno == err


def test_af_unix_is_the_kernels():
    a, b = libsock.socketpair()
    with a, b:
        assert isinstance(a, kernel.socket) and a.family == kernel.AF_UNIX
        a.sendall(b"x")
        assert b.recv(1) == b"x"
    with libsock.socket(libsock.AF_UNIX, libsock.SOCK_STREAM) as s:
        assert isinstance(s, kernel.socket)


def test_names_resolve_through_etc_hosts(tmp_path, monkeypatch):
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n198.18.0.1 kernel-side kside.example  # the peer\n"
                     "::1 ip6-localhost\n")
    monkeypatch.setattr(libsock_names, "_hosts", libsock_names.HostsFile(str(hosts)))
    assert libsock.gethostbyname("kernel-side") == "198.18.0.1"
    assert libsock.gethostbyname("KSIDE.example.") == "198.18.0.1"
    assert libsock.getaddrinfo("kside.example", 80)[0][4] == ("198.18.0.1", 80)
    assert libsock.getnameinfo(("198.18.0.1", 80), 0) == ("kernel-side", "http")
    assert libsock.getnameinfo(("198.18.0.1", 80), libsock.NI_NUMERICHOST | libsock.NI_NUMERICSERV) == \
        ("198.18.0.1", "80")
    assert libsock.gethostbyaddr("198.18.0.1")[0] == "kernel-side"
    with pytest.raises(libsock.gaierror) as exc:
        libsock.getaddrinfo("no-such-name.invalid", 80)
    assert exc.value.errno == kernel.EAI_NONAME
    with pytest.raises(libsock.gaierror):
        libsock.getnameinfo(("198.18.0.9", 80), libsock.NI_NAMEREQD)
