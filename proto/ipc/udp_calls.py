"""The calls libsock makes to udpd, each declared once: the wire contract of `DatagramCall`.

Declared with calls.py's vocabulary (Arg, CallSpec); checked by udpd before
anything runs (`check`): a call that does not fit is answered with EINVAL,
never an exception.  A sid is one int (libsock names it); `state` is what udpd
last answered for the socket (UdpSocket.state), handed back after a restart.
"""
from __future__ import annotations

import errno

from proto.ipc.calls import MAX_INT, Arg, CallError, CallSpec, check_args, declared
from proto.ipc.messages import DatagramCall

_PORT = Arg("port", (int,), 0, 65535)
_HOST = Arg("addr", (str,))
_HOST_OR_NONE = Arg("addr", (str, type(None)))
_LEVEL, _OPTNAME = Arg("level", (int,), -(1 << 31), (1 << 31) - 1), Arg("name", (int,), -(1 << 31), (1 << 31) - 1)

CALLS: dict[str, CallSpec] = {spec.op: spec for spec in (
    CallSpec("socket", (Arg("state", (list, type(None))),), answers="state", posted="may"),
    CallSpec("bind", (_HOST, _PORT), answers="state"),
    CallSpec("connect", (_HOST_OR_NONE, _PORT), answers="state (addr None: dissolve)"),
    CallSpec("sendto", (_HOST_OR_NONE, _PORT), answers="[bytes sent, state if bound just now, else None]",
             data=True, posted="may"),
    CallSpec("recv", (Arg("size", (int,), 0, MAX_INT), Arg("peek", (bool,))),
             answers="[addr, port, datagram length], and a data frame"),
    CallSpec("setsockopt", (_LEVEL, _OPTNAME, Arg("value", (int,), -(1 << 31), (1 << 31) - 1)),
             answers="state"),
    CallSpec("getsockopt", (_LEVEL, _OPTNAME), answers="int"),
    CallSpec("close", posted="may"),
    CallSpec("cancel", (Arg("call_id", (int,), 0, MAX_INT),), posted="only"),
    # readiness (libsock/_readiness.py): the process's channel says hello (sid 0), then a socket
    # whose fileno() is asked for is watched through it; the answer's `ready` is its first state
    CallSpec("hello", answers="None"),
    CallSpec("watch", (Arg("channel", (bytes,)),), answers="None, and `ready`"),
)}


def check(call: DatagramCall) -> CallSpec:
    """The declaration `call` fits, or CallError (op, posting, sid, arguments, data frame, timeout)."""
    spec = declared(CALLS, call)
    if isinstance(call.sid, bool) or not isinstance(call.sid, int):
        raise CallError(errno.EBADF, "sid is not an int")
    check_args(spec, call)         # the arguments, data frame and timeout: as tcpd's calls
    return spec
