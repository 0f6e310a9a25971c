"""tcpd's system-call layer (Linux's sys_socketcall -> sock_* -> inet_*): each call checked
against its declaration (proto/ipc/calls.py), dispatched through one table to its handler,
run on the engine, and answered, or parked until the engine wakes its socket.

A handler returns `(value,)` or `(value, data)` when the call is done, None to keep
waiting; a TcpError of EAGAIN, EINPROGRESS or EALREADY parks a blocking call too.
A retried call runs its handler again (Linux: the sleeper re-runs its loop).
"""
from __future__ import annotations

import errno
import time
from typing import Callable

from proto.ipc.calls import CALLS, CallError, check_args, check_header
from proto.ipc.messages import Call, Reply
from proto.tcp.engine import POLLERR, POLLHUP, POLLOUT, SO_ERROR, SOL_SOCKET, TcpEngine, TcpError
from services.access import PRIVILEGED_PORTS
from services.tcp.channels import GAP, NEXT, Channels
from services.tcp.fences import Fences
from services.tcp.owners import Owners
from services.readiness import Readiness
from services.tcp.sleepers import ParkedCall, Sleepers

# errors after which a blocked call is retried when its socket wakes
WAIT_ERRNOS = {errno.EAGAIN, errno.EINPROGRESS, errno.EALREADY}
WHOLE_SEND = 4096       # a blocking send this small goes in whole (call_send)
Handler = Callable[[float, ParkedCall], "tuple | None"]


class Syscalls:
    """Mixed into Tcpd: the calls from libsock."""
    engine: TcpEngine
    sleepers: Sleepers
    owners: Owners
    fences: Fences
    channels: Channels
    lineage: set                        # the tcpd incarnations whose sockets this one holds
    readiness: Readiness
    incarnation: str
    drop_calls = 0          # debug (control_drop_calls): drop this many calls unanswered
    socket_limit: int                   # limits.sockets_per_process (RLIMIT_NOFILE's 1024 by default)
    refused_sockets: dict               # socket id -> the errno its calls get: posted over the limit (EMFILE),
                                        # not recovered from a tcpd that died (ECONNRESET)
    count: Callable
    answer: Callable
    changed: Callable
    flush: Callable

    def call_table(self) -> dict[str, Handler]:
        """THE dispatch table: one handler per declared call (call_<op>)."""
        return {op: getattr(self, "call_" + op) for op in CALLS}

    def on_call(self, identity: bytes, call: Call) -> None:
        now = time.monotonic()
        self._call(now, identity, call)
        self.flush(now)             # what the engine decided, and the answer, once the store has them

    def _call(self, now: float, identity: bytes, call: Call) -> None:
        number = call.id if call.id >= 0 else -call.id      # numbered per channel (channels.py)
        if number:
            verdict = self.channels.admit(identity, number)
            if verdict is not NEXT:
                if verdict is GAP:
                    self.count("channel_gaps")              # lost with a tcpd that died: libsock sends again
                elif call.id > 0:
                    self._again(now, identity, call)
                else:
                    self.count("posts_again")
                return
        try:
            spec = check_header(call)
            sid = call.sid
            if sid is not None and sid[0] not in self.lineage:     # a socket of a tcpd whose state died too
                self._answer(identity, call, errno.ECONNRESET if call.op != "close" else 0)
                return
            check_args(spec, call)
        except CallError as exc:
            self.count("ipc_bad_call")
            self._answer(identity, call, exc.errno)
            return
        if sid is not None:
            if sid[1] in self.refused_sockets:       # named over the limit: EMFILE now, as socket() would
                if call.op == "close":
                    del self.refused_sockets[sid[1]]
                    self._answer(identity, call, 0)
                else:
                    self._answer(identity, call, self.refused_sockets[sid[1]])
                return
            if sid[1] in self.engine.conns:
                if call.op not in ("inherit", "fence") and not self.owners.claim(sid[1], identity):
                    self.count("ebadf_not_owner")        # another process's socket: an fd it does not have
                    self._answer(identity, call, errno.EBADF)
                    return
                self.changed(call.op, sid[1])
        if call.id <= 0:
            self._posted(now, identity, call)
            if self.fences.posted(sid[1]):
                self._retry(now, sid[1])
            return
        if self.drop_calls and call.op != "probe":
            self.drop_calls -= 1                   # `netstack` debug control: a bug, on purpose
            self.count("calls_dropped_on_purpose")
            return
        self._dispatch(now, identity, call)

    def _dispatch(self, now: float, identity: bytes, call: Call, sent: int = 0) -> None:
        """Run a call waited for: answered, or parked until its socket wakes."""
        timeout = call.timeout
        parked = ParkedCall(identity, call, None if timeout is None else now + timeout, sent)
        try:
            done = self.calls[call.op](now, parked)
        except TcpError as exc:
            if exc.errno in WAIT_ERRNOS and timeout != 0:
                self._park(parked)
            elif call.op == "send" and parked.sent:
                self._answer(identity, call, 0, parked.sent)
            else:
                self._answer(identity, call, exc.errno)
        else:
            if done is not None:
                self._answer(identity, call, 0, *done)
            else:
                self._park(parked)

    def _again(self, now: float, identity: bytes, call: Call) -> None:
        """A waited call handled before, sent again by libsock after a tcpd restart: its answer
        again, or, if it was asleep in the tcpd that died, asleep again with its progress."""
        state = self.channels.states[identity]
        if state.answer is not None and state.answer[0] == call.id:
            self.count("answers_again")
            _id, err, value, data = state.answer
            self._answer(identity, call, err, value, data, again=True)
        elif state.progress is not None and state.progress[0] == call.id \
                and not self.sleepers.holds(call.sid[1], identity, call.id):
            self.count("calls_asleep_again")
            self._dispatch(now, identity, call, state.progress[1])
        else:
            self.count("calls_again_ignored")      # asleep here already, or long answered

    def _park(self, parked: ParkedCall) -> None:
        self.sleepers.park(parked)
        self.channels.asleep(parked.identity, parked.call.id, parked.sent)

    def _posted(self, now: float, identity: bytes, call: Call) -> None:
        """A call nobody waits for: a socket libsock named, a send within the socket's credit,
        a close, a fork's hand-off, a cancel."""
        sid = call.sid[1]
        self.count("posted_calls")
        self.posted_since_commit = True        # libsock was told it is done: committed at once
        op = call.op
        try:
            if op == "socket":
                if self._too_many_sockets(identity):
                    if len(self.refused_sockets) < 100_000:
                        self.refused_sockets[sid] = errno.EMFILE
                    return
                self.owners.note(now, self.engine.socket(now, sid), identity, self.caller.uid)
            elif op == "send":
                self.engine.send_posted(now, sid, call.payload[0])
            elif op == "close":
                self._close_or_hold(now, sid, identity)
            elif op == "fork":
                self.owners.promise(now, identity, call.args[0], call.args[1])
            elif op == "inherit":
                self.count("inherits")
                self.owners.inherit(now, identity, call.args[0], self.caller.uid)
            elif op == "cancel":
                self._withdraw(identity, sid, call.args[0])
        except TcpError:            # a socket already gone: nothing to tell anyone
            self.count("posted_call_failed")

    def _answer(self, identity: bytes, call: Call, err: int, value=None, data: bytes | None = None,
                again: bool = False) -> None:
        if not isinstance(call.id, int) or call.id <= 0:     # posted: nobody waits for an answer
            return
        sid = call.sid       # may be malformed here: the answer to a call that failed its check
        sid = sid[1] if isinstance(sid, list) and len(sid) == 2 and isinstance(sid[1], int) else None
        credit = self.engine.send_credit(sid) if not err and sid is not None else 0
        if call.op == "connect" and value is None and sid is not None:
            value = self.engine.sock_state(sid)       # the engine owns SS_*; libsock keeps what it is told
        ready = None        # the socket's readiness, when the caller watches it (readiness.py)
        if self.readiness and sid is not None and sid in self.readiness:
            ready = self.readiness.stamp(sid, self.owners.pid_of(identity), self.engine.poll)
        if not again:
            self.channels.answered(identity, call.id, err, value, data)
        self.answer(identity, Reply(call.id, err, value, self.incarnation, credit, ready,
                                    payload=(data,) if data is not None else ()))

    def _answer_parked(self, parked: ParkedCall, err: int, value=None, data: bytes | None = None) -> None:
        parked.answered = True
        self._answer(parked.identity, parked.call, err, value, data)

    def _retry(self, now: float, sid: int) -> None:
        """The socket was woken: try its sleeping calls again (Linux: the sleeper re-runs its loop)."""
        for parked in self.sleepers.take(sid):
            call = parked.call
            try:
                done = self.calls[call.op](now, parked)
            except TcpError as exc:
                if exc.errno in WAIT_ERRNOS:
                    self._park(parked)
                elif call.op == "send" and parked.sent:
                    self._answer_parked(parked, 0, parked.sent)
                else:
                    self._answer_parked(parked, exc.errno)
                continue
            if done is None:
                self._park(parked)
            else:
                self._answer_parked(parked, 0, *done)

    def expire(self, now: float) -> None:
        """Calls whose timeout passed: EAGAIN (libsock: socket.timeout); a partial send its count."""
        for parked in self.sleepers.expired(now):
            if parked.call.op == "send" and parked.sent:
                self._answer_parked(parked, 0, parked.sent)
            else:
                self._answer_parked(parked, errno.EAGAIN)

    # -- one handler per call (proto/ipc/calls.py declares their arguments) ----------

    def _too_many_sockets(self, identity: bytes) -> bool:
        """The caller holds limits.sockets_per_process sockets already (Linux: EMFILE)."""
        pid = self.owners.pid_of(identity)
        if pid is not None and self.owners.count(pid) >= self.socket_limit:
            self.count("emfile")
            return True
        return False

    def call_socket(self, now: float, parked: ParkedCall):
        if self._too_many_sockets(parked.identity):
            raise TcpError(errno.EMFILE)
        sid = self.engine.socket(now)
        self.owners.note(now, sid, parked.identity, self.caller.uid)
        return ([self.incarnation, sid],)

    def call_bind(self, now: float, parked: ParkedCall):
        addr, port = parked.call.args
        if 0 < port < PRIVILEGED_PORTS and self.caller.uid != 0:
            raise TcpError(errno.EACCES)          # Linux: ip_unprivileged_port_start, CAP_NET_BIND_SERVICE
        return (self.engine.bind(now, parked.sid, addr, port),)

    def call_listen(self, now: float, parked: ParkedCall):
        backlog, = parked.call.args
        return (self.engine.listen(now, parked.sid, backlog),)

    def call_accept(self, now: float, parked: ParkedCall):
        if self._too_many_sockets(parked.identity):
            raise TcpError(errno.EMFILE)             # the connection stays queued, as Linux's
        child, (addr, port) = self.engine.accept(now, parked.sid)
        self.changed("accept", child)
        self.owners.note(now, child, parked.identity, self.owners.uid_of(parked.identity))
        ready = self._watch_child(parked.sid, child, parked.identity) if self.readiness else None
        if ready is not None:
            return ([[self.incarnation, child], [addr, port], ready],)
        return ([[self.incarnation, child], [addr, port]],)

    def _watch_child(self, listener: int, child: int, identity: bytes) -> list | None:
        """A process that watches a listener watches what it accepts (an event loop registers
        the connection next): the child's first `ready` travels in the accept's answer,
        saving the watch call's round trip."""
        pid = self.owners.pid_of(identity)
        channel = self.readiness.channel(listener, pid)
        if channel is None:
            return None
        self.readiness.watch(child, pid, channel, 0)
        return self.readiness.stamp(child, pid, self.engine.poll)

    def call_connect(self, now: float, parked: ParkedCall):
        """Start the handshake, then wait for its end as the caller would.

        A blocking connect sleeps inside Linux's inet_stream_connect, which marks
        the socket connected; CPython's connect with a timeout instead polls for
        POLLOUT and reads SO_ERROR, leaving a second connect() to return 0 once.
        """
        call = parked.call
        sid = parked.sid
        if not parked.started or call.timeout is None:
            parked.started = True
            addr, port = call.args
            self.engine.connect(now, sid, addr, port)
            return (None,)
        if not self.engine.poll(sid) & (POLLOUT | POLLERR | POLLHUP):
            return None
        error = self.engine.getsockopt(now, sid, SOL_SOCKET, SO_ERROR)
        if error:
            raise TcpError(error)
        return (None,)

    def call_send(self, now: float, parked: ParkedCall):
        call = parked.call
        data = call.payload[0]
        flags, = call.args
        if not data:                # nothing to send, but the socket's state still answers (EPIPE...)
            return (self.engine.send(now, parked.sid, data, flags),)
        if not parked.sent and call.timeout != 0 and len(data) <= WHOLE_SEND \
                and 0 < self.engine.send_credit(parked.sid) < len(data):
            # a blocking send of a small message waits for room for all of it, as Linux's writer
            # sleeps until a third of the buffer is free: a signal that interrupts it then leaves
            # nothing half sent (the stream would carry part of a message the program retries)
            raise TcpError(errno.EAGAIN)
        while parked.sent < len(data):
            try:
                rest = memoryview(data)[parked.sent:] if parked.sent else data    # no copy of the rest
                parked.sent += self.engine.send(now, parked.sid, rest, flags)
            except TcpError as exc:
                if exc.errno == errno.EAGAIN and parked.sent and call.timeout == 0:
                    return (parked.sent,)
                raise
        return (parked.sent,)

    def call_recv(self, now: float, parked: ParkedCall):
        size, flags = parked.call.args
        data = self.engine.recv(now, parked.sid, size, flags)
        return (len(data), data)

    def call_shutdown(self, now: float, parked: ParkedCall):
        how, = parked.call.args
        return (self.engine.shutdown(now, parked.sid, how),)

    def call_close(self, now: float, parked: ParkedCall):
        # a listener's or a bound socket's close: its port is free when close() returns
        self._close_socket(now, parked.sid)
        return (None,)

    def call_setsockopt(self, now: float, parked: ParkedCall):
        level, name, value = parked.call.args
        return (self.engine.setsockopt(now, parked.sid, level, name, value),)

    def call_getsockopt(self, now: float, parked: ParkedCall):
        level, name = parked.call.args
        value = self.engine.getsockopt(now, parked.sid, level, name)
        return (list(value) if isinstance(value, tuple) else value,)

    def call_getsockname(self, now: float, parked: ParkedCall):
        return (list(self.engine.getsockname(now, parked.sid)),)

    def call_getpeername(self, now: float, parked: ParkedCall):
        return (list(self.engine.getpeername(now, parked.sid)),)

    def call_poll(self, now: float, parked: ParkedCall):
        """Answer with the poll mask once any of the wanted events is set."""
        wanted, = parked.call.args
        mask = self.engine.poll(parked.sid)
        if mask & (wanted | POLLERR | POLLHUP):            # always count
            return (mask,)
        return None

    def call_sync(self, now: float, parked: ParkedCall):
        """libsock's barrier before its process exits: everything it posted is here."""
        self.count("posted_syncs")
        return (None,)

    def call_fence(self, now: float, parked: ParkedCall):
        """Wait until another channel's posted calls, up to a count, are handled (fences.py)."""
        channel, count = parked.call.args
        if self.fences.passed(channel, count):
            return (None,)
        if not parked.started:
            parked.started = True
            self.count("fence_waits")
        self.fences.wait(parked.sid)
        return None

    def call_watch(self, now: float, parked: ParkedCall):
        """The calling process watches the socket's readiness through the channel named in
        args (readiness.py); the answer's `ready` gives the first state, later gains go to
        the channel."""
        channel, = parked.call.args
        if parked.sid not in self.engine.conns:
            raise TcpError(errno.EBADF)
        if not self.readiness.watch_call(parked.sid, self.owners.pid_of(parked.identity), channel):
            raise TcpError(errno.EINVAL)
        self.count("watches")
        return (None,)

    def call_probe(self, now: float, parked: ParkedCall):
        """libsock's backstop: does a call it waits for still sleep here?"""
        call_id, = parked.call.args
        return (self.sleepers.holds(parked.sid, parked.identity, call_id),)

    def call_cancel(self, now: float, parked: ParkedCall):     # posted only: check() refuses a call
        raise TcpError(errno.EINVAL)

    call_fork = call_inherit = call_cancel

    # -- closing and withdrawing ---------------------------------------------------

    def _close_or_hold(self, now: float, sid: int, identity: bytes) -> None:
        if self.owners.hold_close(now, sid, identity):
            self.count("closes_held_for_a_child")       # just forked: the child may keep it (owners.py)
        else:
            self._close_socket(now, sid)

    def _close_socket(self, now: float, sid: int) -> None:
        self.owners.forget(sid)
        self.readiness.forget(sid)
        self.engine.close(now, sid)
        for waiting in self.sleepers.take(sid):
            self._answer_parked(waiting, errno.EBADF)

    def _withdraw(self, identity: bytes, sid: int, call_id: int) -> None:
        """libsock's caller was interrupted (a signal handler raised) while its call slept here:
        the call ends now with EINTR, having taken nothing (a blocking send: with what it sent).
        A call already answered is not here; libsock keeps what that answer carried."""
        parked = self.sleepers.withdraw(sid, identity, call_id)
        if parked is None:
            self.count("cancel_too_late")
            return
        self.count("calls_interrupted")
        if parked.call.op == "send" and parked.sent:
            self._answer_parked(parked, 0, parked.sent)
        else:
            self._answer_parked(parked, errno.EINTR)
