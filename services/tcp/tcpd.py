"""tcpd: the TCP engine's shell.  Segments from ipd, calls from libsock and
timer fires from timerd go into the pure engine; its segments go to ipd, its
timers to timerd, and the calls it woke are answered.

A blocking call is a parked request: every engine call is non-blocking, and a
call that would block waits here until the engine wakes its socket (Linux's
`wake_up_interruptible`) or its timeout passes, then is tried again.
"""
from __future__ import annotations

import os
import time

from proto.ipc.messages import Readiness, SegmentsReceived, SegmentsTransmit, TimerFired, TimerSet
from proto.tcp.config import TcpConfig
from proto.tcp.engine import TcpEngine
from proto.wire.ipv4 import addr_to_str, str_to_addr
from proto.wire.tcp import TcpParseError, build_tcp, parse_tcp
from services._shell import Service, log, main
from services.tcp.fences import Fences
from services.tcp.owners import Owners
from services.tcp.readiness import Readiness as ReadinessWatches
from services.tcp.sleepers import Sleepers
from services.tcp.syscalls import Syscalls
from services.tcp.timerbatch import TimerBatch
from services.tcp.tracering import TraceRing

class Tcpd(Service, Syscalls):
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
        self.socket_limit = self.config.get("limits", {}).get("sockets_per_process", 1024)
        self.refused_sockets = {}
        self.trace = TraceRing()        # for netstack trace: transitions, and segments while leased
        self.readiness = ReadinessWatches()     # whose fileno() follows which socket (readiness.py)
        self._addr_bytes: dict[str, bytes] = {}
        self.handlers.update(tcp_rx=self.on_segments, call=self.on_call, timer_fired=self.on_timer_fired)
        self.calls = self.call_table()
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
            for sid in woken:
                self._retry(now, sid)
            # after the retries: a woken call's answer carries the state, and what it told
            # needs no message of its own (a blocking recv that waited for the data)
            if self.readiness and effects.woken:
                self._tell_readiness(effects.woken)
            if not woken:
                return

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
        self.expire(now)

    def _tell_readiness(self, woken) -> None:
        """What the engine woke, to the processes that watch it (readiness.py): gains only."""
        for channel, entries in self.readiness.gained(woken, self.engine.poll).items():
            self.counters["readiness_sent"] = self.counters.get("readiness_sent", 0) + 1
            self.reply(channel, Readiness(entries))

    # -- control ----------------------------------------------------------------

    def control_stats(self) -> dict:
        return {**self.counters, **self.engine.counters, "parked_calls": len(self.sleepers),
                "held_sockets": len(self.owners), "timer_requests_saved": self.timers.dropped,
                "watched_sockets": len(self.readiness)}

    def control_drop_calls(self, count: int = 1) -> dict:
        """Debug, off unless asked: drop the next `count` calls without running or answering
        them, as a bug in tcpd would (what libsock's backstop is for)."""
        self.drop_calls = max(0, int(count))
        return {"dropping": self.drop_calls}

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
