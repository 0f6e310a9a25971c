"""limits.sockets_per_process, as RLIMIT_NOFILE: a process that holds that many sockets gets
EMFILE for another (at socket(), or at the first call on it, since libsock names its sockets
without waiting for an answer) and for accept(), whose connection stays queued; a close makes
room again."""
from __future__ import annotations

import errno

import pytest

import libsock
from tests.e2e.conftest import running_stack

LIMIT = 6


def test_sockets_per_process():
    with running_stack(settings=[f"limits.sockets_per_process={LIMIT}"]) as stack:
        listener = libsock.create_server(("0.0.0.0", 7700))
        held = [listener]
        while len(held) < LIMIT - 1:
            s = libsock.socket()
            s.bind(("0.0.0.0", 0))
            held.append(s)
        client = libsock.create_connection((stack.addr, 7700), timeout=5)      # the limit's last one
        held.append(client)
        extra = libsock.socket()
        with pytest.raises(OSError) as info:
            extra.bind(("0.0.0.0", 0))
        assert info.value.errno == errno.EMFILE
        extra.close()
        listener.settimeout(5)
        with pytest.raises(OSError) as info:
            listener.accept()
        assert info.value.errno == errno.EMFILE
        held.pop(1).close()                       # room for one: the queued connection is accepted
        conn, _ = listener.accept()
        client.sendall(b"hi")
        assert conn.recv(10) == b"hi"
        assert stack.stats()["tcpd"]["emfile"] >= 2
        conn.close()
        for s in held:
            s.close()
