"""The system-call boundary: a call crosses to tcpd as a message and its reply
comes back when Linux would wake the sleeper.

One DEALER socket per thread (so blocking calls in several threads proceed in
parallel), one outstanding request on it at a time.  While a reply is awaited,
tcpd's liveness is checked every LIVENESS_CHECK seconds: a call never outlives
the tcpd that holds its socket.
"""
from __future__ import annotations

import errno
import itertools
import os
import threading
import time
from pathlib import Path

import zmq

from proto.ipc import codec
from proto.ipc.messages import Call, Reply

LIVENESS_CHECK = 0.2
STARTUP_WAIT = 5.0       # a new socket waits this long for a restarting tcpd


def _error(code: int, message: str | None = None) -> OSError:
    return OSError(code, message or os.strerror(code))


class Stack:
    """The instance found through NETSTACK_RUN."""

    def __init__(self, run_dir: str):
        self.run_dir = Path(run_dir)
        self.endpoint = f"ipc://{self.run_dir / 'tcpd.sock'}"
        self._local = threading.local()
        self._ids = itertools.count(1)
        self._tcpd: tuple[str, int] | None = None     # (incarnation, pid) last seen

    # -- tcpd liveness ------------------------------------------------------------

    def _read_tcpd(self) -> tuple[str, int] | None:
        """tcpd's newest incarnation and pid, if it is alive."""
        try:
            with open(self.run_dir / "incarnations" / "tcpd", "rb") as record:
                record.seek(0, os.SEEK_END)
                record.seek(max(0, record.tell() - 200))
                last = record.read().split(b"\n")[-2].split()
            incarnation, pid = last[0].decode(), int(last[1])
        except (OSError, IndexError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return incarnation, pid

    def down_error(self) -> OSError:
        return _error(errno.ENETDOWN, f"no netstack running at {self.run_dir} (set NETSTACK_RUN, or run netstack up)")

    def wait_for_tcpd(self, patience: float) -> tuple[str, int]:
        deadline = time.monotonic() + patience
        while True:
            tcpd = self._read_tcpd()
            if tcpd is not None and (self.run_dir / "tcpd.sock").exists():
                return tcpd
            if not self.run_dir.exists() or time.monotonic() >= deadline:
                raise self.down_error()
            time.sleep(0.02)

    # -- calls --------------------------------------------------------------------

    def _socket(self) -> zmq.Socket:
        sock = getattr(self._local, "sock", None)
        if sock is None or self._local.pid != os.getpid():      # a forked child needs its own
            sock = zmq.Context.instance().socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(self.endpoint)
            self._local.sock, self._local.pid = sock, os.getpid()
        return sock

    def call(self, op: str, sid, args: list, timeout: float | None, data: bytes | None = None):
        """Send one call and wait for its reply: (value, data frame or None); OSError on failure."""
        if sid is None:          # a new socket: the stack must be there, or soon again
            incarnation = self.wait_for_tcpd(STARTUP_WAIT if self.run_dir.exists() else 0)[0]
        else:
            incarnation = sid[0]
        sock = self._socket()
        request_id = next(self._ids)
        frames = codec.encode(Call(request_id, op, sid, args, timeout, payload=(data,) if data is not None else ()))
        sock.send_multipart(frames, copy=len(data or b"") < 65536)
        while True:
            if sock.poll(int(LIVENESS_CHECK * 1000)):
                reply = codec.decode(sock.recv_multipart())
                if not isinstance(reply, Reply) or reply.id != request_id:
                    continue                     # the answer to a call abandoned earlier
                if reply.errno:
                    raise _error(reply.errno)
                return reply.value, (reply.payload[0] if reply.payload else None)
            tcpd = self._read_tcpd()
            if tcpd is None or tcpd[0] != incarnation:
                self._abandon()
                if sid is None and tcpd is None:
                    raise self.down_error()
                raise _error(errno.ECONNRESET, "Connection reset by peer (the stack's tcpd restarted)")

    def _abandon(self) -> None:
        """Drop this thread's socket: a new one will not receive the dead call's answer."""
        sock = getattr(self._local, "sock", None)
        if sock is not None:
            sock.close(0)
            self._local.sock = None


_stacks: dict[str, Stack] = {}
_stacks_lock = threading.Lock()


def stack() -> Stack:
    run_dir = os.environ.get("NETSTACK_RUN", "/run/netstack/default")
    with _stacks_lock:
        found = _stacks.get(run_dir)
        if found is None:
            found = _stacks[run_dir] = Stack(run_dir)
        return found
