"""The call contract: every declared call has a handler in tcpd, and a call that does not fit
its declaration is an errno, never an exception."""
from __future__ import annotations

import errno

import pytest

from proto.ipc.calls import CALLS, CallError, check
from proto.ipc.messages import Call
from services.tcp.syscalls import Syscalls

SID = ["inc", 5]


def call(op, args, sid=SID, id=1, payload=(), timeout=None):
    return Call(id, op, sid, args, timeout, payload=payload)


def test_every_declared_call_has_one_handler():
    table = Syscalls().call_table()
    assert set(table) == set(CALLS)
    assert all(callable(h) for h in table.values())


@pytest.mark.parametrize("bad, err", [
    (call("nonsense", []), errno.EINVAL),
    (call("bind", ["198.18.0.2"]), errno.EINVAL),                  # too few
    (call("bind", ["198.18.0.2", 80, 1]), errno.EINVAL),           # too many
    (call("bind", [b"198.18.0.2", 80]), errno.EINVAL),             # wrong type
    (call("bind", ["198.18.0.2", 70000]), errno.EINVAL),           # out of range
    (call("bind", ["198.18.0.2", True]), errno.EINVAL),            # a bool is not a port
    (call("recv", [-1, 0]), errno.EINVAL),
    (call("recv", [10, 0], sid=[1, 2, 3]), errno.EBADF),
    (call("recv", [10, 0], sid="x"), errno.EBADF),
    (call("recv", [10, 0], sid=["inc", "5"]), errno.EBADF),
    (call("recv", [10, 0], timeout="soon"), errno.EINVAL),
    (call("recv", [10, 0], timeout=-1), errno.EINVAL),
    (call("send", [0]), errno.EINVAL),                             # no data frame
    (call("recv", [10, 0], payload=(b"x",)), errno.EINVAL),        # a data frame it does not take
    (call("cancel", [3]), errno.EINVAL),                           # posted only
    (call("bind", ["198.18.0.2", 80], id=0), errno.EINVAL),        # never posted
    (call("fence", ["not bytes", 1]), errno.EINVAL),
    (call("socket", [], sid=SID), errno.EINVAL),                   # called, socket names nothing
    (call("bind", "ab"), errno.EINVAL),                            # args not a list
])
def test_a_call_that_does_not_fit_is_an_errno(bad, err):
    with pytest.raises(CallError) as info:
        check(bad)
    assert info.value.errno == err


@pytest.mark.parametrize("good", [
    call("socket", [], sid=None),
    call("socket", [], id=0, sid=["inc", 1 << 41]),
    call("bind", ["0.0.0.0", 0]),
    call("send", [0], payload=(b"data",)),
    call("send", [0], id=0, payload=(b"",)),
    call("recv", [65536, 2], timeout=0.5),
    call("setsockopt", [1, 13, [1, 0]]),
    call("setsockopt", [6, 1, b"\x01\0\0\0"]),
    call("fence", [b"p1.abc", 3], timeout=2),
    call("cancel", [7], id=0),
    call("fork", [[1, 2], "token"], id=0),
    call("inherit", ["token"], id=0),
    call("close", [], id=0),
])
def test_well_formed_calls_pass(good):
    assert check(good).op == good.op
