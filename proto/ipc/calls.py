"""The system calls libsock makes to tcpd, each declared once: the wire contract of `Call`.

A `Call` carries `op`, `sid` and `args` (messages.py); this table says, for
every op, what its arguments are (name, type, range), whether it names a
socket, whether it may or must be posted (id 0: nobody waits), whether a data
frame travels with it, and what the reply's value is.  tcpd checks each call
against its declaration before anything runs (`check`): a call that does not
fit is answered with an errno (EINVAL; EBADF for a malformed socket id), never
an exception.  Renaming a handler's parameter cannot change the protocol:
arguments are matched by position against this table, not by the engine's
signatures.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass

from proto.ipc.messages import Call

MAX_INT = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class Arg:
    name: str
    kinds: tuple[type, ...]
    lo: int | None = None
    hi: int | None = None

    def fits(self, value) -> bool:
        if isinstance(value, bool) and bool not in self.kinds:
            return False
        if not isinstance(value, self.kinds):
            return False
        if isinstance(value, int) and not isinstance(value, bool):
            if self.lo is not None and value < self.lo:
                return False
            if self.hi is not None and value > self.hi:
                return False
        return True


def _int(name: str, lo: int | None = -(1 << 31), hi: int | None = (1 << 31) - 1) -> Arg:
    return Arg(name, (int,), lo, hi)


ADDR = Arg("addr", (str,))
PORT = _int("port", 0, 65535)
LEVEL, OPTNAME = _int("level"), _int("name")
OPTVALUE = Arg("value", (int, bytes, list, bool))


@dataclass(frozen=True, slots=True)
class CallSpec:
    op: str
    args: tuple[Arg, ...] = ()
    answers: str = "None"          # the reply's value on success (documentation of the wire form)
    posted: str = "never"          # "never", "may" (id 0 allowed) or "only" (id 0 required)
    data: bool = False             # a payload frame carries bytes (send)
    new_socket: bool = False       # makes a socket: called, it names none (sid None)


CALLS: dict[str, CallSpec] = {spec.op: spec for spec in (
    CallSpec("socket", answers="[incarnation, sid]; posted: the sid names the new socket", posted="may",
             new_socket=True),
    CallSpec("bind", (ADDR, PORT)),
    CallSpec("listen", (_int("backlog", None, None),)),
    CallSpec("connect", (ADDR, PORT), answers="None once connected; EINPROGRESS, EALREADY, or the error"),
    CallSpec("accept", answers="[[incarnation, child sid], [addr, port]] (+ the child's [version, mask] "
                               "when the caller watches the listener: it then watches the child too)"),
    CallSpec("send", (_int("flags"),), answers="bytes taken", posted="may", data=True),
    CallSpec("recv", (_int("size", 0, MAX_INT), _int("flags")), answers="length, and a data frame"),
    CallSpec("shutdown", (_int("how"),)),
    CallSpec("close", posted="may"),
    CallSpec("setsockopt", (LEVEL, OPTNAME, OPTVALUE)),
    CallSpec("getsockopt", (LEVEL, OPTNAME), answers="int, or [onoff, seconds] for SO_LINGER"),
    CallSpec("getsockname", answers="[addr, port]"),
    CallSpec("getpeername", answers="[addr, port]"),
    CallSpec("poll", (_int("events"),), answers="the poll mask, once one of events (or ERR/HUP) is set"),
    CallSpec("sync", answers="None, once everything the channel posted has been handled"),
    CallSpec("fence", (Arg("channel", (bytes,)), _int("count", 0, MAX_INT)),
             answers="None, once `count` posted calls of `channel` have been handled"),
    CallSpec("watch", (Arg("channel", (bytes,)),),
             answers="None; the reply's `ready` and later Readiness messages to `channel` give the poll mask"),
    CallSpec("cancel", (_int("call_id", 0, MAX_INT),), posted="only"),
    CallSpec("probe", (_int("call_id", 0, MAX_INT),),
             answers="whether call_id of this channel sleeps on the socket in tcpd (libsock's backstop)"),
    CallSpec("fork", (Arg("sids", (list,)), Arg("token", (str,))), posted="only"),
    CallSpec("inherit", (Arg("token", (str,)),), posted="only"),
)}


class CallError(Exception):
    """A call that does not fit its declaration: answered with `errno`."""

    def __init__(self, err: int, why: str):
        super().__init__(err, why)
        self.errno = err
        self.why = why


def declared(table: dict[str, CallSpec], call) -> CallSpec:
    """The declaration of `call`'s op in `table` (tcpd's or udpd's), posted as it may be; or CallError."""
    spec = table.get(call.op)
    if spec is None:
        raise CallError(errno.EINVAL, f"unknown call {call.op!r}")
    posted = call.id <= 0
    if posted and spec.posted == "never" or not posted and spec.posted == "only":
        raise CallError(errno.EINVAL, f"{call.op} {'cannot' if posted else 'must'} be posted")
    return spec


def check_header(call: Call) -> CallSpec:
    """The declaration of `call`'s op, or CallError: the op is known, posted as it may be,
    and names its socket as [incarnation, int]."""
    spec = declared(CALLS, call)
    posted = call.id <= 0
    sid = call.sid
    if spec.new_socket and not posted:
        if sid is not None:
            raise CallError(errno.EINVAL, f"{call.op} names no socket")
    elif not (isinstance(sid, list) and len(sid) == 2 and isinstance(sid[0], str)
            and isinstance(sid[1], int) and not isinstance(sid[1], bool)):
        raise CallError(errno.EBADF, "sid is not [incarnation, int]")
    return spec


def check_args(spec: CallSpec, call: Call) -> None:
    """The arguments' number, types and ranges, the data frame and the timeout, or CallError."""
    args = call.args
    if not isinstance(args, list) or len(args) != len(spec.args):
        raise CallError(errno.EINVAL, f"{call.op} takes {len(spec.args)} arguments")
    for arg, value in zip(spec.args, args):
        if not arg.fits(value):
            raise CallError(errno.EINVAL, f"{call.op}: bad {arg.name}")
    if spec.data != bool(call.payload) or len(call.payload) > 1:
        raise CallError(errno.EINVAL, f"{call.op}: {'one data frame' if spec.data else 'no data frame'}")
    if call.timeout is not None and (isinstance(call.timeout, bool) or not isinstance(call.timeout, (int, float))
                                     or not 0 <= call.timeout < 1e15):          # NaN and inf too
        raise CallError(errno.EINVAL, f"{call.op}: bad timeout")


def check(call: Call) -> CallSpec:
    """The whole check: `check_header`, then `check_args`."""
    spec = check_header(call)
    check_args(spec, call)
    return spec
