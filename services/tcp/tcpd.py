"""tcpd: the TCP engine's shell.  Segments from ipd, calls from libsock and
timer fires from timerd go into the pure engine; its segments go to ipd, its
timers to timerd, and the calls it woke are answered.

A blocking call is a parked request: every engine call is non-blocking, and a
call that would block waits here until the engine wakes its socket (Linux's
`wake_up_interruptible`) or its timeout passes, then is tried again.

tcpd may die at any moment and lose no connection (docs/tcpd-recovery.md): what
a batch of work changed is committed to the store (store.py) before anything
it produced leaves (segments to ipd, answers to libsock), and a new tcpd starts
from the store before it handles anything.
"""
from __future__ import annotations

import errno
import json
import os
import time

from proto.ipc.messages import Call, Readiness, SegmentsReceived, SegmentsTransmit, TimerFired, TimerSet
from proto.tcp.config import TcpConfig
from proto.tcp.engine import TcpEngine
from proto.wire.ipv4 import addr_to_str, str_to_addr
from proto.wire.tcp import TcpParseError, build_tcp, parse_tcp
from services._shell import Service, log, main
from services.access import PUBLIC_DIR
from services.tcp.channels import Channels
from services.tcp.fences import Fences
from services.tcp.owners import Owners
from services.readiness import Readiness as ReadinessWatches
from services.tcp.sleepers import Sleepers
from services.tcp.store import TcpStore
from services.tcp.syscalls import Syscalls
from services.tcp.timerbatch import TimerBatch
from services.tcp.tracering import TraceRing

# calls after which a socket's control block is written whole (others move only its streams)
_STRUCTURAL = frozenset({"socket", "bind", "listen", "connect", "accept", "shutdown", "close", "setsockopt"})


class Tcpd(Service, Syscalls):
    name = "tcpd"
    public_ops = frozenset({"call"})        # applications' calls, at RUN/public/tcpd.sock

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
        durable = tcp.pop("durable", 1)
        self.store = TcpStore(str(self.run_dir / "tcp.journal")) if durable else None
        self.store_seconds = 0.0         # time spent in its commits (stats: store_us)
        self.posted_since_commit = False
        self.channels = Channels(self.store.channel if self.store is not None else None)
        self.lineage = {self.incarnation}
        self._held_segments: list = []          # what leaves once the store has the commit that made it
        self._held_answers: list = []
        self.engine = TcpEngine(TcpConfig.from_mapping(tcp), instance["addr"], os.urandom(16))
        self.owners = Owners()          # which processes hold each socket
        self.readiness = ReadinessWatches()     # whose fileno() follows which socket (readiness.py)
        self.refused_sockets = {}
        if self.store is not None:
            self._recover(TcpConfig.from_mapping(tcp), instance["addr"])
        # libsock reads here whether this tcpd holds the sockets of the one before
        tmp = self.run_dir / PUBLIC_DIR / "tcpd.lineage.new"
        tmp.write_text(json.dumps({"incarnation": self.incarnation, "holds": sorted(self.lineage)}))
        os.chmod(tmp, 0o644)            # (the public directory's mode is the access rule)
        os.replace(tmp, self.run_dir / PUBLIC_DIR / "tcpd.lineage")
        self.sleepers = Sleepers()
        self.socket_limit = self.config.get("limits", {}).get("sockets_per_process", 1024)
        self.trace = TraceRing()        # for netstack trace: transitions, and segments while leased
        self._addr_bytes: dict[str, bytes] = {}
        self.handlers.update(tcp_rx=self.on_segments, call=self.on_call, timer_fired=self.on_timer_fired)
        self.calls = self.call_table()
        self.counters.update(in_bytes=0, out_bytes=0)     # segments' bytes, headers included
        self.fences = Fences(self.channels.handled)     # calls of two channels on one socket, in order
        self.peer("ipd")
        self.peer("timerd")
        armed = self.engine.armed_timers()
        if armed:           # the recovered connections' timers; timerd may never announce itself again
            self._send_timers(time.monotonic(), self.timers.restart(armed))

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
                self._held_segments.append(SegmentsTransmit(addresses, payload=tuple(frames)))
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
                break
        self._release(now)

    # -- what must outlive tcpd (store.py) ------------------------------------------

    def answer(self, identity: bytes, msg) -> None:
        """An answer to libsock: sent once the store holds what the call did."""
        self._held_answers.append((identity, msg))

    def changed(self, op: str, sid: int) -> None:
        """A call on `sid`: its control block is written whole if the call changes its structure
        (any call's effect on the streams the engine notes itself)."""
        (self.engine.cx.touched if op in _STRUCTURAL else self.engine.cx.active).add(sid)

    def _kept(self, sid: int):
        """What the store keeps of a socket besides the engine's: its holders and watchers."""
        holders, watchers = self.owners.holders(sid), self.readiness.watchers(sid)
        return (holders, watchers) if holders or watchers else None

    def _release(self, now: float) -> None:
        """Commit what the engine and the calls changed, then let out what it produced.  With
        nothing to let out and no posted call handled, the commit waits for the next one that
        has: what nobody outside was told may die with tcpd (the peer sends again what it was
        not acknowledged, libsock a waited call it was not answered), so a recv that parks, or
        a segment whose ACK is delayed, costs no write of its own (a one-byte request/response:
        3 commits -> 2).  A posted call (a send within credit, a close) counts as told: its
        process may exit before libsock could send it again."""
        if self.store is None:
            self.engine.take_changes()          # (nobody keeps them: the sets would only grow)
        elif self._held_segments or self._held_answers or self.posted_since_commit:
            self.posted_since_commit = False
            began = time.perf_counter()
            self.store.commit(self.engine, now, self._kept)
            self.store_seconds += time.perf_counter() - began
        if self._held_segments:
            for msg in self._held_segments:
                self.send("ipd", msg)
            self._held_segments.clear()
        if self._held_answers:
            for identity, msg in self._held_answers:
                self.reply(identity, msg)
            self._held_answers.clear()

    def _recover(self, config: TcpConfig, addr: str) -> None:
        """Before anything is handled: the sockets, channels and secret the store kept."""
        began = time.monotonic()
        store = self.store
        eng, socks, channels = store.load()
        suspects = self._suspects()
        recovered, failed, kept = [], 0, {}
        for sid, rec in socks.items():
            try:
                if sid in suspects:
                    raise ValueError("in flight at two crashes in a row")
                recovered.append(store.restore(rec, began))
                if rec.shell is not None:
                    kept[sid] = rec.shell
            except Exception as exc:          # (its peer gets a RST at its next segment)
                failed += 1
                self.refused_sockets[sid] = errno.ECONNRESET     # and its holder at its next call
                log.error("tcpd: socket %s not recovered: %s", sid, exc)
        if eng:
            self.engine = TcpEngine(config, addr, eng["secret"])
            self.engine.adopt(recovered, eng["next_id"])
            self.lineage |= set(eng["lineage"])
        for (identity, kind), value in channels.items():
            self.channels.restore(identity, kind, value)
        # who held and watched each socket; each watcher is told the socket's state anew
        self.readiness.first_version = len(self.lineage) << 40
        told: dict[bytes, list] = {}
        for sid, (holders, watchers) in kept.items():
            if sid in self.engine.conns:
                self.owners.restore(began, sid, holders)
                for pid, channel in watchers.items():
                    told.setdefault(channel, []).append(
                        self.readiness.watch(sid, pid, channel, self.engine.poll(sid)))
        for channel, entries in told.items():
            self.answer(channel, Readiness(entries))
        cx = self.engine.cx
        cx.next_id += 1000            # ids handed out after the last engine record are not reused
        record = {"secret": cx.key, "next_id": cx.next_id, "lineage": sorted(self.lineage)}
        store.engine_record, store.channel_states = record, self.channels.states
        store.journal.rewrite(store.everything(self.engine, began, self._kept))
        cx.touched, cx.active = set(), set()
        took = time.monotonic() - began
        self.counters.update(conns_recovered=len(recovered) if eng else 0, reset_on_recovery=failed,
                             recovery_ms=round(took * 1000, 3))
        if eng:
            log.info("tcpd: recovered %d sockets (%d reset) of incarnations %s in %.1f ms",
                     len(recovered), failed, sorted(self.lineage - {self.incarnation}), took * 1000)

    def _suspects(self) -> set[int]:
        """Sockets in flight at each of the last two crashes, if they came within a minute:
        such a socket is reset rather than crash the stack again (the rest recover)."""
        try:
            lines = (self.run_dir / "tcpd.crashes").read_text().splitlines()[-2:]
            crashes = [json.loads(line) for line in lines]
        except (OSError, ValueError):
            return set()
        if len(crashes) < 2 or crashes[1]["at"] - crashes[0]["at"] > 60:
            return set()
        return set(crashes[0]["sids"]) & set(crashes[1]["sids"])

    def run(self) -> None:
        try:
            super().run()
        except BaseException:
            cx = self.engine.cx         # the sockets it was working on when it failed
            sids = sorted(cx.touched | cx.active)
            with open(self.run_dir / "tcpd.crashes", "a") as crashes:
                crashes.write(json.dumps({"at": time.time(), "sids": sids}) + "\n")
            raise

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
        self._release(now)

    def _tell_readiness(self, woken) -> None:
        """What the engine woke, to the processes that watch it (readiness.py): gains only."""
        for channel, entries in self.readiness.gained(woken, self.engine.poll).items():
            self.counters["readiness_sent"] = self.counters.get("readiness_sent", 0) + 1
            self.answer(channel, Readiness(entries))

    # -- control ----------------------------------------------------------------

    def control_stats(self) -> dict:
        return {**self.counters, **self.engine.counters, "parked_calls": len(self.sleepers),
                "held_sockets": len(self.owners), "timer_requests_saved": self.timers.dropped,
                "store_commits": self.store.commits if self.store is not None else 0,
                "store_bytes": self.store.journal.size if self.store is not None else 0,
                "store_us": round(self.store_seconds * 1e6),        # time spent committing
                "watched_sockets": len(self.readiness)}

    def control_drop_calls(self, count: int = 1) -> dict:
        """Debug, off unless asked: drop the next `count` calls without running or answering
        them, as a bug in tcpd would (what libsock's backstop is for)."""
        self.drop_calls = max(0, int(count))
        return {"dropping": self.drop_calls}

    def control_ss(self) -> list:
        rows = self.engine.listing(time.monotonic())
        for row in rows:
            row["owners"] = self.owners.owners_of(row["id"])      # [[pid, uid]...], as ss -p
        return rows

    def refuse(self, identity: bytes, msg, err: int) -> None:
        if isinstance(msg, Call):
            self._answer(identity, msg, err)

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
