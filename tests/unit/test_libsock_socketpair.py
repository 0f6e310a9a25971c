"""socketpair(AF_INET) checks that the connection it accepted is the one it made, as CPython's
fallback does: another program that connected to the listener first is refused."""
from __future__ import annotations

import pytest

import libsock


class FakeSocket:
    def __init__(self, name, peer=None):
        self.name, self.peer, self.closed = name, peer, False

    def connect(self, address):
        self.peer = address

    def getsockname(self):
        return self.name

    def getpeername(self):
        return self.peer

    def close(self):
        self.closed = True


class FakeListener(FakeSocket):
    def __init__(self, intruder: bool):
        super().__init__(("127.0.0.1", 5000))
        self.intruder = intruder
        self.accepted = None

    def accept(self):
        peer = ("127.0.0.1", 6666) if self.intruder else made[0].getsockname()
        self.accepted = FakeSocket(("127.0.0.1", 5000), peer)
        return self.accepted, peer

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


made: list = []


@pytest.mark.parametrize("intruder", [False, True])
def test_the_accepted_peer_must_be_the_connecting_socket(monkeypatch, intruder):
    listener = FakeListener(intruder)
    made.clear()
    monkeypatch.setattr(libsock, "create_server", lambda address: listener)
    monkeypatch.setattr(libsock, "socket", lambda *a: made.append(FakeSocket(("127.0.0.1", 40000))) or made[-1])
    if intruder:
        with pytest.raises(ConnectionError):
            libsock.socketpair(libsock.AF_INET)
        assert made[0].closed and listener.accepted.closed
    else:
        a, b = libsock.socketpair(libsock.AF_INET)
        assert a is made[0] and b is listener.accepted and not a.closed
