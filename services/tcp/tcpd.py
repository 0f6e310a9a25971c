"""tcpd: the TCP engine's shell.  Segments from ipd, calls from libsock and
timer fires from timerd go into the pure engine; its segments go to ipd, its
timers to timerd, and the calls it woke are answered.

A blocking call is a parked request: every engine call is non-blocking, and a
call that would block waits here until the engine wakes its socket (Linux's
`wake_up_interruptible`) or its timeout passes, then is tried again.
"""
from __future__ import annotations

import errno
import os
import time

from proto.ipc.messages import Call, Reply, SegmentsReceived, SegmentsTransmit, TimerFired, TimerSet
from proto.tcp.config import TcpConfig
from proto.tcp.engine import POLLERR, POLLHUP, POLLOUT, SO_ERROR, SOL_SOCKET, TcpEngine, TcpError
from proto.wire.ipv4 import addr_to_str, str_to_addr
from proto.wire.tcp import TcpParseError, build_tcp, parse_tcp
from services._shell import Service, log, main
from services.tcp.fences import Fences
from services.tcp.owners import Owners
from services.tcp.sleepers import ParkedCall, Sleepers
from services.tcp.timerbatch import TimerBatch
from services.tcp.tracering import TraceRing

# errors after which a blocked call is retried when its socket wakes
_WAIT_ERRNOS = {errno.EAGAIN, errno.EINPROGRESS, errno.EALREADY}


class Tcpd(Service):
    name = "tcpd"

    def __init__(self, run_dir: str):
        super().__init__(run_dir)
        instance = self.config["instance"]
        tcp = dict(self.config["tcp"])
        tcp.setdefault("mss", instance["mtu"] - 40)
        self.offload = bool(instance.get("offload"))     # the device computes our checksums, cuts super-segments
        # super-segments always: the device cuts them (offload) or nicd does (software GSO)
        tcp.setdefault("gso_max_size", 65535 - 40)
        self.timers = TimerBatch(tcp.pop("timer_slack", 0.0))      # the shell's, not the engine's
        self.mss = tcp["mss"]
        self.engine = TcpEngine(TcpConfig.from_mapping(tcp), instance["addr"], os.urandom(16))
        self.sleepers = Sleepers()
        self.owners = Owners()          # which processes hold each socket
        self.trace = TraceRing()        # for netstack trace: transitions, and segments while leased
        self._addr_bytes: dict[str, bytes] = {}
        self.handlers.update(tcp_rx=self.on_segments, call=self.on_call, timer_fired=self.on_timer_fired)
        self.calls = {
            "socket": self._socket, "bind": self._simple, "listen": self._simple, "connect": self._connect,
            "accept": self._simple, "send": self._send, "recv": self._recv, "shutdown": self._simple,
            "close": self._close, "setsockopt": self._simple, "getsockopt": self._simple,
            "getsockname": self._simple, "getpeername": self._simple, "poll": self._poll,
            "sync": self._sync, "fence": self._fence, "cancel": self._posted_only, "fork": self._posted_only,
        }
        self.counters.update(in_bytes=0, out_bytes=0)     # segments' bytes, headers included
        self.fences = Fences()          # calls of two channels on one socket, in order
        self.peer("ipd")
        self.peer("timerd")

    # -- segments ---------------------------------------------------------------

    def on_segments(self, identity: bytes, msg: SegmentsReceived) -> None:
        if len(msg.addresses) != len(msg.payload):
            self.count("ipc_bad_segment_count")
            return
        now = time.monotonic()
        segment_in = self.engine.segment_in
        tracing = self.trace.tracing_segments(now)
        trusted = set(msg.trusted)         # vouched for by the device (offload): not summed again
        self.counters["in_bytes"] += sum(map(len, msg.payload))
        for i, ((src, dst), data) in enumerate(zip(msg.addresses, msg.payload)):
            try:
                segment = parse_tcp(data, src, dst, verify_checksum=i not in trusted)
            except TcpParseError as exc:
                self.count("drop_" + exc.reason)
                continue
            if tracing:
                self.trace.segment(now, "in", addr_to_str(src), addr_to_str(dst), segment)
            segment_in(now, addr_to_str(src), addr_to_str(dst), segment)
        self.flush(now)

    def _addr(self, text: str) -> bytes:
        packed = self._addr_bytes.get(text)
        if packed is None:
            packed = self._addr_bytes[text] = str_to_addr(text)
        return packed

    def flush(self, now: float) -> None:
        """Carry out what the engine decided: send, arm timers, wake sleepers.

        A woken call may make the engine decide more (a send that fills the
        window), so this repeats until the engine has nothing left to say.
        """
        if self.engine.internal_errors:
            for trace in self.engine.internal_errors:
                log.error("tcpd: the engine survived a bug of ours:\n%s", trace)
            self.engine.internal_errors.clear()
        while True:
            effects = self.engine.take_effects()
            if effects.segments:
                addresses, frames = [], []
                for src, dst, segment in effects.segments:
                    src_b, dst_b = self._addr(src), self._addr(dst)
                    addresses.append([src_b, dst_b])
                    # a super-segment's checksum is made per piece, by the device or by nicd's GSO
                    partial = self.offload or len(segment.payload) > self.mss
                    frames.append(build_tcp(segment, src_b, dst_b, partial))
                self.counters["out_bytes"] += sum(map(len, frames))
                self.send("ipd", SegmentsTransmit(addresses, payload=tuple(frames)))
            if effects.timers:
                add = self.timers.add
                for key, deadline in effects.timers:
                    add(now, key, deadline)
                self._send_timers(now)
            if effects.transitions:
                for transition in effects.transitions:
                    self.trace.transition(transition)
            if effects.segments and self.trace.tracing_segments(now):
                for src, dst, segment in effects.segments:
                    self.trace.segment(now, "out", src, dst, segment)
            woken = [sid for sid in effects.woken if sid in self.sleepers]
            if not woken:
                return
            for sid in woken:
                self._retry(now, sid)

    # -- timers -----------------------------------------------------------------

    def _send_timers(self, now: float, entries: list | None = None) -> None:
        """Arms and cancels to timerd: those of the batch once it is due (see timerbatch.py)."""
        if entries is None:
            entries = self.timers.take(now)
        if entries:
            self.send("timerd", TimerSet(self.name, [[list(key), deadline] for key, deadline in entries]))

    def on_timer_fired(self, identity: bytes, msg: TimerFired) -> None:
        now = time.monotonic()
        for key, _deadline in msg.entries:
            if isinstance(key, list) and len(key) == 2:
                key = (key[0], key[1])
                self.timers.fired(key)
                self.engine.timer_fired(now, key)
        self.flush(now)

    def peer_restarted(self, service: str, previous: str | None) -> None:
        # every new timerd holds nothing of ours, also the first one this tcpd hears of (a tcpd
        # that restarted never heard the timerd before: `previous` is None then)
        if service == "timerd":
            armed = self.engine.armed_timers()
            log.info("tcpd: timerd restarted; re-arming %d timers", len(armed))
            self.count("timer_rearms")
            self._send_timers(time.monotonic(), self.timers.restart(armed))

    # -- calls ------------------------------------------------------------------

    def on_call(self, identity: bytes, call: Call) -> None:
        now = time.monotonic()
        handler = self.calls.get(call.op)
        if handler is None:
            self._answer(identity, call, errno.EINVAL)
            return
        if call.op != "socket" or call.id == 0:     # (a posted socket() names its id)
            sid = call.sid
            if not (isinstance(sid, list) and len(sid) == 2 and isinstance(sid[1], int)):
                self._answer(identity, call, errno.EBADF)
                return
            if sid[0] != self.incarnation:     # a socket of a tcpd that died
                self._answer(identity, call, errno.ECONNRESET if call.op != "close" else 0)
                return
            if sid[1] in self.engine.conns:
                self.owners.note(now, sid[1], identity)
        if call.id == 0:
            self._posted(now, identity, call)
            if self.fences.posted(identity, call.sid[1]):
                self._retry(now, call.sid[1])
            self.flush(now)
            return
        timeout = call.timeout
        if timeout is not None and not isinstance(timeout, (int, float)):
            self._answer(identity, call, errno.EINVAL)
            return
        parked = ParkedCall(identity, call, None if timeout is None else now + timeout)
        try:
            done = handler(now, parked)
        except TcpError as exc:
            if exc.errno in _WAIT_ERRNOS and timeout != 0:
                self.sleepers.park(parked)
            else:
                self._answer(identity, call, exc.errno)
        except (TypeError, ValueError, IndexError):
            self._answer(identity, call, errno.EINVAL)
        else:
            if done is not None:
                self._answer(identity, call, 0, *done)
            else:
                self.sleepers.park(parked)
        self.flush(now)

    def _posted(self, now: float, identity: bytes, call: Call) -> None:
        """A call nobody waits for: a socket libsock named, a send within the socket's credit, a close."""
        sid = call.sid[1]
        self.count("posted_calls")
        try:
            if call.op == "socket":
                self.owners.note(now, self.engine.socket(now, sid), identity)
            elif call.op == "send" and len(call.payload) == 1:
                self.engine.send_posted(now, sid, call.payload[0])
            elif call.op == "close":
                self._close_or_hold(now, sid, identity)
            elif call.op == "fork" and len(call.args) == 1 and isinstance(call.args[0], list):
                self.owners.promise(now, identity, call.args[0])
            elif call.op == "cancel" and len(call.args) == 1:
                self._withdraw(identity, sid, call.args[0])
            else:
                self.count("ipc_bad_posted_call")
        except TcpError:            # a socket already gone: nothing to tell anyone
            self.count("posted_call_failed")

    def _answer(self, identity: bytes, call: Call, err: int, value=None, data: bytes | None = None) -> None:
        if not call.id:             # posted: nobody waits for an answer
            return
        sid = call.sid
        credit = self.engine.send_credit(sid[1]) if not err and isinstance(sid, list) else 0
        self.reply(identity, Reply(call.id, err, value, self.incarnation, credit,
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
                if exc.errno in _WAIT_ERRNOS:
                    self.sleepers.park(parked)
                elif call.op == "send" and parked.sent:
                    self._answer_parked(parked, 0, parked.sent)
                else:
                    self._answer_parked(parked, exc.errno)
                continue
            except (TypeError, ValueError, IndexError):
                self._answer_parked(parked, errno.EINVAL)
                continue
            if done is None:
                self.sleepers.park(parked)
            else:
                self._answer_parked(parked, 0, *done)

    def next_deadline(self) -> float | None:
        deadlines = [d for d in (self.sleepers.next_deadline(), self.owners.next_sweep, self.timers.due)
                     if d is not None]
        return min(deadlines) if deadlines else None

    def tick(self, now: float) -> None:
        self._send_timers(now)
        if self.owners.next_sweep is not None and now >= self.owners.next_sweep:
            for sid in self.owners.closes_due(now):      # no forked child took it: the close happens
                if sid in self.engine.conns and self.engine.conns[sid].user_open:
                    self._close_socket(now, sid)
            for sid in self.owners.orphans(now):
                if sid in self.engine.conns and self.engine.conns[sid].user_open:
                    self.count("orphans_closed")     # its processes died: closed as at their exit
                    self._close_socket(now, sid)
            self.flush(now)
        for parked in self.sleepers.expired(now):
            if parked.call.op == "send" and parked.sent:
                self._answer_parked(parked, 0, parked.sent)       # a partial send returns its count
            else:
                self._answer_parked(parked, errno.EAGAIN)          # libsock: socket.timeout

    # -- one method per call: return (value,) or (value, data) when done, None to keep waiting

    def _socket(self, now: float, parked: ParkedCall):
        sid = self.engine.socket(now)
        self.owners.note(now, sid, parked.identity)
        return ([self.incarnation, sid],)

    def _simple(self, now: float, parked: ParkedCall):
        call = parked.call
        result = getattr(self.engine, call.op)(now, call.sid[1], *call.args)
        if call.op == "accept":
            child, (addr, port) = result
            self.owners.note(now, child, parked.identity)
            return ([[self.incarnation, child], [addr, port]],)
        if isinstance(result, tuple):
            result = list(result)
        return (result,)

    def _connect(self, now: float, parked: ParkedCall):
        """Start the handshake, then wait for its end as the caller would.

        A blocking connect sleeps inside Linux's inet_stream_connect, which marks
        the socket connected; CPython's connect with a timeout instead polls for
        POLLOUT and reads SO_ERROR, leaving a second connect() to return 0 once.
        """
        call = parked.call
        sid = call.sid[1]
        if not parked.started or call.timeout is None:
            parked.started = True
            self.engine.connect(now, sid, *call.args)
            return (None,)
        if not self.engine.poll(sid) & (POLLOUT | POLLERR | POLLHUP):
            return None
        error = self.engine.getsockopt(now, sid, SOL_SOCKET, SO_ERROR)
        if error:
            raise TcpError(error)
        return (None,)

    def _send(self, now: float, parked: ParkedCall):
        call = parked.call
        data = call.payload[0] if call.payload else b""
        flags = call.args[0] if call.args else 0
        if not data:                # nothing to send, but the socket's state still answers (EPIPE...)
            return (self.engine.send(now, call.sid[1], data, flags),)
        while parked.sent < len(data):
            try:
                rest = memoryview(data)[parked.sent:] if parked.sent else data    # no copy of the rest
                parked.sent += self.engine.send(now, call.sid[1], rest, flags)
            except TcpError as exc:
                if exc.errno == errno.EAGAIN and parked.sent and call.timeout == 0:
                    return (parked.sent,)
                raise
        return (parked.sent,)

    def _recv(self, now: float, parked: ParkedCall):
        call = parked.call
        size, flags = call.args
        data = self.engine.recv(now, call.sid[1], size, flags)
        return (len(data), data)

    def _close(self, now: float, parked: ParkedCall):
        # a listener's or a bound socket's close: its port is free when close() returns
        self._close_socket(now, parked.call.sid[1])
        return (None,)

    def _close_or_hold(self, now: float, sid: int, identity: bytes) -> None:
        if self.owners.hold_close(now, sid, identity):
            self.count("closes_held_for_a_child")       # just forked: the child may keep it (owners.py)
        else:
            self._close_socket(now, sid)

    def _close_socket(self, now: float, sid: int) -> None:
        self.owners.forget(sid)
        self.engine.close(now, sid)
        for waiting in self.sleepers.take(sid):
            self._answer_parked(waiting, errno.EBADF)

    def _fence(self, now: float, parked: ParkedCall):
        """Wait until another channel's posted calls, up to a count, are handled (fences.py)."""
        channel, count = parked.call.args
        if not isinstance(channel, bytes) or not isinstance(count, int):
            raise ValueError("fence: [channel, count]")
        if self.fences.passed(channel, count):
            return (None,)
        if not parked.started:
            parked.started = True
            self.count("fence_waits")
        self.fences.wait(parked.sid)
        return None

    def _posted_only(self, now: float, parked: ParkedCall):
        raise ValueError(f"{parked.call.op} is posted, never called")

    def _withdraw(self, identity: bytes, sid: int, call_id) -> None:
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

    def _sync(self, now: float, parked: ParkedCall):
        """libsock's barrier before its process exits: everything it posted is here."""
        self.count("posted_syncs")
        return (None,)

    def _poll(self, now: float, parked: ParkedCall):
        """Answer with the poll mask once any of the wanted events is set."""
        wanted = parked.call.args[0]
        mask = self.engine.poll(parked.call.sid[1])
        if mask & (wanted | 0x18):            # POLLERR | POLLHUP always count
            return (mask,)
        return None

    # -- control ----------------------------------------------------------------

    def control_stats(self) -> dict:
        return {**self.counters, **self.engine.counters, "parked_calls": len(self.sleepers),
                "held_sockets": len(self.owners), "timer_requests_saved": self.timers.dropped}

    def control_ss(self) -> list:
        return self.engine.listing(time.monotonic())

    # -- netstack trace: transitions always, segments while a trace holds a lease

    def control_trace_start(self, lease: float = 10.0) -> dict:
        """Record segments too, for `lease` seconds unless control_trace renews it."""
        return {"next": self.trace.lease(time.monotonic(), lease)}

    def control_trace_stop(self) -> dict:
        return {"next": self.trace.stop()}

    def control_trace(self, since: int = 0, lease: float | None = None) -> dict:
        """Events from number `since` on (see TraceRing.read), renewing the lease if given."""
        if lease is not None:
            self.trace.lease(time.monotonic(), lease)
        return {**self.trace.read(since), "incarnation": self.incarnation}


if __name__ == "__main__":
    main(Tcpd)
