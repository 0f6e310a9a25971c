"""The whole TCP: demultiplexing, and the ways in and out.

Pure: called with an event and `now`; returns nothing but accumulates
`Effects` (segments to send, timers to arm, sockets to wake, transitions) that
the shell drains with `take_effects()` after each call.

Ways in:  segment_in, timer_fired, and the socket calls (sockets.py, sockopt.py;
          all non-blocking).
Ways out: take_effects, armed_timers, listing, counters.

The parts:   context.py   what a connection's code may use (tables, effects, THE state change)
             rcv.py       tcp_rcv's steps for a connection; listener.py for LISTEN
             snd.py       the output path;   recovery.py, scoreboard.py  loss recovery
             timers.py    the seven timers;  ports.py  the port table
"""
from __future__ import annotations

from proto.tcp import rcv, timers
from proto.tcp.config import TcpConfig
from proto.tcp.connection import TIMER_KINDS
from proto.tcp.context import Context
from proto.tcp.effects import Effects, TimerKey
from proto.tcp.listener import listen_arrives
from proto.poll import POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT, POLLPRI, POLLRDHUP
from proto.tcp.sockets import MSG_PEEK, SHUT_RD, SHUT_RDWR, SHUT_WR, SocketCalls, TcpError
from proto.tcp.sockopt import (IPPROTO_IP, IPPROTO_TCP, SO_ERROR, SO_KEEPALIVE, SO_LINGER, SO_RCVBUF,
                               SO_REUSEADDR, SO_SNDBUF, SOL_SOCKET, TCP_KEEPCNT, TCP_KEEPIDLE,
                               TCP_KEEPINTVL, TCP_MAXSEG, TCP_NODELAY, SocketOptions)
from proto.tcp.state import State, Transition
from proto.wire.tcp import TcpSegment

S = State


class TcpEngine(SocketCalls, SocketOptions):
    def __init__(self, config: TcpConfig, local_addr: str, secret: bytes):
        cx = self.cx = Context(config, local_addr, secret)
        self.config = config
        self.local_addr = local_addr
        # the tables and the counters, shared with the context (read by the shell and the tests)
        self.conns = cx.conns
        self.by_tuple = cx.by_tuple
        self.listeners = cx.listeners
        self.ports = cx.ports
        self.counters = cx.counters
        self.internal_errors = cx.internal_errors

    @property
    def strict(self) -> bool:
        """Tests: let a bug raise out of segment_in / timer_fired instead of being counted."""
        return self.cx.strict

    @strict.setter
    def strict(self, value: bool) -> None:
        self.cx.strict = value

    # ================================================================ ways out
    def take_effects(self) -> Effects:
        cx = self.cx
        effects = cx.effects
        cx.effects = Effects()
        return effects

    def take_changes(self) -> tuple[set[int], set[int]]:
        """For tcpd's store: (sockets whose control block changed in structure, sockets whose
        streams may have moved) since the last time asked."""
        cx = self.cx
        changes = (cx.touched, cx.active)
        cx.touched, cx.active = set(), set()
        return changes

    def adopt(self, conns: list, next_id: int) -> None:
        """Connections made again from tcpd's store (checkpoint.restore), into the tables:
        demultiplexing, listeners, ports, and each listener's queues from its children."""
        cx = self.cx
        for conn in conns:
            cx.conns[conn.id] = conn
        for conn in conns:
            if conn.bound:
                cx.ports.users.setdefault(conn.local_port, set()).add(conn.id)
            if conn.state is S.LISTEN:
                cx.listeners[conn.local_port] = conn
                queued = [cid for cid in conn.accept_queue if cid in cx.conns and cx.conns[cid].queued]
                strays = sorted(c.id for c in conns if c.parent == conn.id and c.queued and c.id not in queued)
                conn.accept_queue = type(conn.accept_queue)(queued + strays)
                conn.syn_queue = {cid for cid in conn.syn_queue if cid in cx.conns}
            elif conn.state is not S.CLOSED and conn.remote_port:
                cx.by_tuple[conn.key] = conn
        cx.next_id = max(cx.next_id, next_id)

    def armed_timers(self) -> dict[TimerKey, float]:
        """Every running timer; the shell re-arms them all in a new timer service."""
        out = {}
        for conn in self.conns.values():
            timers_ = conn.timers
            for kind in TIMER_KINDS:
                deadline = timers_[kind]
                conn.armed[kind] = deadline
                if deadline is not None:
                    out[(conn.id, kind)] = deadline
        return out

    def listing(self, now: float) -> list[dict]:
        rows = []
        for conn in self.conns.values():
            listening = conn.state is S.LISTEN
            rows.append({
                "id": conn.id,
                "state": conn.state.value,
                "local": (conn.local_addr, conn.local_port),
                "remote": (conn.remote_addr, conn.remote_port),
                "recv_q": len(conn.accept_queue) if listening else conn.recv_buffer.length,
                "send_q": conn.backlog if listening else len(conn.send_buffer),
                "timers": {k: round(d - now, 6) for k, d in conn.timers.items() if d is not None},
                "rto": conn.rtt.rto, "srtt": conn.rtt.srtt, "rttvar": conn.rtt.rttvar,
                "cwnd": conn.cwnd, "ssthresh": conn.ssthresh,
                "snd_wnd": conn.snd_wnd, "rcv_wnd": conn.rcv_wnd,
                "retransmissions": conn.total_retransmits, "mss": conn.send_mss,
                "orphan": not conn.user_open and not conn.queued,
            })
        return rows

    # ================================================================ ways in: segments and timers
    def segment_in(self, now: float, src: str, dst: str, seg: TcpSegment) -> None:
        """One parsed segment from the network (tcp_rcv's demultiplexing).  Never raises (a
        peer's fault is counted)."""
        cx = self.cx
        cx.now = now
        cx.counters["in_segs"] += 1
        try:
            conn = cx.by_tuple.get((seg.dst_port, src, seg.src_port))
            if conn is not None:
                cx.active.add(conn.id)
                if conn.state is S.TIME_WAIT:
                    rcv.time_wait_arrives(cx, conn, now, src, dst, seg)
                else:
                    rcv.segment_arrives(cx, conn, now, seg)
                return
            if not cx.is_local(dst):
                cx.count("drop_not_local")
                return
            if seg.src_port == 0 or seg.dst_port == 0:
                cx.count("drop_port_zero")
                return
            listener = cx.listeners.get(seg.dst_port)
            if listener is not None:
                cx.active.add(listener.id)
                child = listen_arrives(cx, listener, now, src, dst, seg)
                if child is not None:                 # made from a SYN cookie: its ACK completes it
                    rcv.segment_arrives(cx, child, now, seg)
                return
            cx.count("drop_no_socket")
            cx.reply_reset(dst, src, seg)
        except Exception:
            if cx.strict:
                raise
            cx.counters["in_errs"] += 1
            cx.count("drop_internal_error")
            cx.record_internal_error()

    def timer_fired(self, now: float, key: tuple[int, str]) -> None:
        """A timer went off.  Stale, early, repeated or unknown keys are tolerated."""
        cx = self.cx
        cx.now = now
        if not isinstance(key, (tuple, list)) or len(key) != 2:
            cx.count("timer_bad_key")
            return
        try:
            conn_id, kind = key
            conn = self.conns.get(conn_id) if isinstance(conn_id, int) else None
            if conn is None or kind not in conn.timers:
                cx.count("timer_stale")
                return
            cx.active.add(conn_id)
            timers.fire(cx, conn, kind, now)
        except Exception:
            if cx.strict:
                raise
            cx.count("timer_internal_error")
            cx.record_internal_error()


__all__ = [
    "TcpEngine", "TcpError", "Effects", "Transition", "TcpConfig", "State",
    "POLLIN", "POLLPRI", "POLLOUT", "POLLERR", "POLLHUP", "POLLNVAL", "POLLRDHUP", "MSG_PEEK",
    "SHUT_RD", "SHUT_WR", "SHUT_RDWR", "SOL_SOCKET", "IPPROTO_TCP", "IPPROTO_IP", "SO_REUSEADDR",
    "SO_ERROR", "SO_SNDBUF", "SO_RCVBUF", "SO_KEEPALIVE", "SO_LINGER", "TCP_NODELAY", "TCP_MAXSEG",
    "TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT",
]
