"""The whole TCP: demultiplexing, ports, the user calls, and the ways out.

Pure: called with an event and `now`; returns nothing but accumulates
`Effects` (segments to send, timers to arm, sockets to wake, transitions) that
the shell drains with `take_effects()` after each call.

Ways in:  segment_in, timer_fired, and the socket calls (all non-blocking).
Ways out: take_effects, armed_timers, listing, counters.
"""
from __future__ import annotations

import errno
import hashlib
import ipaddress
import struct
import traceback
from collections import deque

from proto.ipc.messages import NAMED_SOCKET_IDS
from proto.tcp import listener as listener_mod
from proto.tcp import connection, rcv, seqnum, snd, timers
from proto.tcp.config import TcpConfig
from proto.tcp.connection import (SS_CONNECTED, SS_CONNECTING, SS_UNCONNECTED, TIMER_KINDS,
                                  Connection)
from proto.tcp.effects import Effects, TimerKey
from proto.tcp.sendbuf import SendBuffer
from proto.tcp.state import State, Transition, allowed
from proto.wire.tcp import TcpSegment

S = State
MASK = seqnum.MASK

# poll bits (Linux values)
POLLIN, POLLPRI, POLLOUT, POLLERR, POLLHUP, POLLNVAL, POLLRDHUP = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x2000
# socket option names (Linux values)
SOL_SOCKET, IPPROTO_TCP, IPPROTO_IP = 1, 6, 0
SO_REUSEADDR, SO_TYPE, SO_ERROR, SO_SNDBUF, SO_RCVBUF, SO_KEEPALIVE, SO_LINGER, SO_ACCEPTCONN = 2, 3, 4, 7, 8, 9, 13, 30
TCP_NODELAY, TCP_MAXSEG, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT = 1, 2, 4, 5, 6
MSG_PEEK = 0x2
SHUT_RD, SHUT_WR, SHUT_RDWR = 0, 1, 2
# Linux's limits for buffer sizes (net.core.[rw]mem_max, SOCK_MIN_[RS]NDBUF)
RMEM_MAX = WMEM_MAX = 212992
LOOPBACK = "127.0.0.1"
SOCK_MIN_RCVBUF, SOCK_MIN_SNDBUF = 2304, 4608
TCP_MIN_MSS, MAX_TCP_WINDOW = 88, 32767
MAX_TCP_KEEPIDLE = MAX_TCP_KEEPINTVL = 32767
MAX_TCP_KEEPCNT = 127

COUNTER_NAMES = (
    "active_opens", "passive_opens", "attempt_fails", "estab_resets", "in_segs", "out_segs",
    "retrans_segs", "in_errs", "out_rsts", "listen_drops", "listen_overflows", "challenge_acks",
    "delayed_acks", "fast_retransmits", "rto_expiries", "timeouts", "window_probes",
    "keepalive_probes", "keepalive_timeouts", "abort_on_close", "abort_on_linger", "window_updates",
    "posted_send_dropped",
)


class TcpError(Exception):
    """A user's bad call, or the socket's pending error: `errno` is Linux's value."""

    def __init__(self, err: int, message: str | None = None):
        super().__init__(err, message or errno.errorcode.get(err, str(err)))
        self.errno = err


class TcpEngine:
    def __init__(self, config: TcpConfig, local_addr: str, secret: bytes):
        self.config = config
        self.local_addr = local_addr
        self.secret = secret
        self._key = secret if len(secret) <= 32 else hashlib.blake2s(secret).digest()
        self.conns: dict[int, Connection] = {}
        self.by_tuple: dict[tuple[int, str, int], Connection] = {}   # (local port, remote addr, remote port)
        self.listeners: dict[int, Connection] = {}                     # local port -> listener
        self.ports: dict[int, set[int]] = {}                           # local port -> ids bound to it
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        self.strict = False          # tests: let a bug raise out of segment_in / timer_fired
        self.internal_errors: list[str] = []     # tracebacks of survived bugs, drained and logged by the shell
        self._effects = Effects()
        self._next_id = 1
        self._port_counter = 0
        self._challenge_start = float("-inf")
        self._challenge_count = 0

    # ================================================================ ways out
    def take_effects(self) -> Effects:
        effects = self._effects
        self._effects = Effects()
        return effects

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
                "recv_q": len(conn.accept_queue) if listening else conn.recv_queue_len,
                "send_q": conn.backlog if listening else len(conn.send_buffer),
                "timers": {k: round(d - now, 6) for k, d in conn.timers.items() if d is not None},
                "rto": conn.rto, "srtt": conn.srtt, "rttvar": conn.rttvar,
                "cwnd": conn.cwnd, "ssthresh": conn.ssthresh,
                "snd_wnd": conn.snd_wnd, "rcv_wnd": conn.rcv_wnd,
                "retransmissions": conn.total_retransmits, "mss": conn.send_mss,
                "orphan": not conn.user_open and not conn.queued,
            })
        return rows

    # ================================================================ helpers for rcv/snd/timers/listener
    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def wake(self, conn: Connection) -> None:
        if conn.user_open:
            self._effects.woken.add(conn.id)

    def arm(self, conn: Connection, kind: str, deadline: float) -> None:
        conn.timers[kind] = deadline
        armed = conn.armed[kind]
        if armed is None or deadline < armed:
            conn.armed[kind] = deadline
            self._effects.timers.append(((conn.id, kind), deadline))
            if kind == "time_wait":
                self._cancel_lazy_timers(conn)

    def _cancel_lazy_timers(self, conn: Connection) -> None:
        """Entering TIME_WAIT, whose timer message leaves anyway: let it also cancel the
        timers cancelled lazily (delayed ACK, retransmission, FIN_WAIT_2), which would
        otherwise each fire for nothing after a short connection.  Established
        connections keep them lazy: cancelling there costs a message per exchange."""
        timers, armed, out = conn.timers, conn.armed, self._effects.timers
        for kind, held in armed.items():
            if held is not None and timers[kind] is None:
                armed[kind] = None
                out.append(((conn.id, kind), None))

    def set_state(self, conn: Connection, now: float, new: State, cause: str) -> None:
        """THE one place a state changes: checked against state.TRANSITIONS and recorded."""
        old = conn.state
        if old is new:
            return
        if not allowed(old, new):
            raise AssertionError(f"illegal transition {old.name} -> {new.name} ({cause})")
        conn.state = new
        self._effects.transitions.append(Transition(
            now, conn.id, (conn.local_addr, conn.local_port), (conn.remote_addr, conn.remote_port),
            old, new, cause))
        if new is S.CLOSED:
            if old is S.SYN_SENT or old is S.SYN_RCVD:
                self.counters["attempt_fails"] += 1
            elif old is S.ESTABLISHED or old is S.CLOSE_WAIT:
                self.counters["estab_resets"] += 1
            self._release(conn)

    def _release(self, conn: Connection) -> None:
        """A connection reached CLOSED: out of the tables, timers cancelled, forgotten if nobody holds it."""
        if self.by_tuple.get(conn.key) is conn:
            del self.by_tuple[conn.key]
        if self.listeners.get(conn.local_port) is conn:
            del self.listeners[conn.local_port]
        for kind in TIMER_KINDS:
            conn.timers[kind] = None
            if conn.armed[kind] is not None:
                conn.armed[kind] = None
                self._effects.timers.append(((conn.id, kind), None))
        if conn.parent is not None and not conn.queued:
            parent = self.conns.get(conn.parent)
            if parent is not None:
                parent.syn_queue.discard(conn.id)
            conn.parent = None
        conn.rcv_shutdown = conn.snd_shutdown = True
        conn.ack_pending = conn.ack_now = False
        if not conn.port_explicit:
            self._unbind(conn)
        if not conn.user_open and not conn.queued:
            self.forget(conn)
        else:
            self.wake(conn)

    def forget(self, conn: Connection) -> None:
        self._unbind(conn)
        self.conns.pop(conn.id, None)

    def abort(self, conn: Connection, now: float, error: int, cause: str) -> None:
        """End the connection at once (reset received or sent, timeout): CLOSED, queues flushed."""
        if error:
            conn.pending_error = error
        conn.send_buffer.clear()
        conn.fin_queued = False
        conn.ooo.clear()
        conn.ooo_len = 0
        self.set_state(conn, now, S.CLOSED, cause)
        self.wake(conn)

    def enter_time_wait(self, conn: Connection, now: float, cause: str) -> None:
        self.set_state(conn, now, S.TIME_WAIT, cause)
        timers_ = conn.timers
        for kind in ("retransmit", "persist", "keepalive", "fin_wait_2", "connect"):
            timers_[kind] = None
        self.arm(conn, "time_wait", now + 2 * self.config.msl)

    def fin_wait_2(self, conn: Connection, now: float) -> None:
        self.set_state(conn, now, S.FIN_WAIT_2, "ACK of FIN")
        conn.timers["retransmit"] = None
        if not conn.user_open:
            self.arm(conn, "fin_wait_2", now + self.config.fin_wait2_timeout)

    def is_local(self, addr: str) -> bool:
        """Ours: the stack's address, or the loopback network 127.0.0.0/8 (ipd loops both back)."""
        return addr == self.local_addr or addr.startswith("127.")

    def reply_reset(self, src: str, dst: str, seg: TcpSegment) -> None:
        """Answer a segment with a RST (never a reset to a reset)."""
        rst = snd.reset_for(seg)
        if rst is not None:
            self._effects.segments.append((src, dst, rst))
            self.counters["out_segs"] += 1
            self.counters["out_rsts"] += 1

    def challenge_allowed(self, now: float) -> bool:
        if now - self._challenge_start >= 1.0:
            self._challenge_start = now
            self._challenge_count = 0
        if self._challenge_count >= self.config.challenge_ack_limit:
            return False
        self._challenge_count += 1
        return True

    @staticmethod
    def _autotune_rcvbuf(conn: Connection, now: float, copied: int) -> None:
        """Linux's receive buffer autotuning (tcp_rcv_space_adjust, "DRS"): once per
        round trip, make room for twice what the application read in it."""
        conn.rcv_space_copied += copied
        elapsed = now - conn.rcv_space_time
        if conn.srtt is None or elapsed < conn.srtt:
            return
        want = 2 * conn.rcv_space_copied
        if want > conn.so_rcvbuf:
            conn.so_rcvbuf = min(want, connection.RCVBUF_AUTOTUNE_MAX)
        conn.rcv_space_copied = 0
        conn.rcv_space_time = now

    def writable(self, conn: Connection) -> bool:
        """Linux sk_stream_is_writeable: free space at least half of what is queued."""
        queued = len(conn.send_buffer)
        free = conn.so_sndbuf - queued
        return free > 0 and 2 * free >= queued

    def keepalive_idle(self, conn: Connection) -> float:
        return conn.tcp_keepidle or self.config.keepalive_time

    def isn(self, now: float, local_port: int, remote_addr: str, remote_port: int) -> int:
        """RFC 6528: ISN = M + F(4-tuple, secret), M a 4-microsecond clock."""
        h = hashlib.blake2s(f"{self.local_addr}:{local_port}>{remote_addr}:{remote_port}".encode(),
                            key=self._key, digest_size=4).digest()
        return (int.from_bytes(h, "big") + int(now * 250_000)) & MASK

    def new_connection(self, state: State = S.CLOSED, cid: int | None = None) -> Connection:
        if cid is None:
            cid = self._next_id
            self._next_id += 1
        conn = Connection(cid, state=state, so_rcvbuf=self.config.rcvbuf, so_sndbuf=self.config.sndbuf,
                          rto=self.config.rto_initial)
        self.conns[cid] = conn
        return conn

    def attach(self, conn: Connection, local_port: int) -> None:
        """Put a child connection into the demultiplexing table and the port table."""
        conn.local_port = local_port
        conn.bound = True
        self.ports.setdefault(local_port, set()).add(conn.id)
        self.by_tuple[conn.key] = conn

    # ---------------------------------------------------------------- ports
    def _bind(self, conn: Connection, port: int, explicit: bool) -> None:
        conn.local_port = port
        conn.bound = True
        conn.port_explicit = explicit
        self.ports.setdefault(port, set()).add(conn.id)

    def _unbind(self, conn: Connection) -> None:
        if conn.bound:
            users = self.ports.get(conn.local_port)
            if users is not None:
                users.discard(conn.id)
                if not users:
                    del self.ports[conn.local_port]
            conn.bound = False
            if not conn.port_explicit:
                conn.local_port = 0

    def _port_conflict(self, conn: Connection, port: int) -> bool:
        """Linux inet_csk_bind_conflict (one local address): SO_REUSEADDR on both sides lets a
        socket share a port with anything but a listener (e.g. a connection in TIME_WAIT)."""
        for cid in self.ports.get(port, ()):
            if cid == conn.id:
                continue
            other = self.conns.get(cid)
            if other is None:
                continue
            if other.state is S.LISTEN or not (conn.so_reuseaddr and other.so_reuseaddr):
                return True
        return False

    def _pick_port(self, now: float, remote: tuple[str, int] | None) -> int | None:
        """An ephemeral port, starting at a keyed-hash offset (RFC 6056 style) and walking the range.
        For connect (`remote` given) a port used only by other connects is fine if the four-tuple is new."""
        lo, hi = self.config.ephemeral_ports
        n = hi - lo + 1
        self._port_counter += 1
        h = hashlib.blake2s(f"{remote}|{int(now)}|{self._port_counter}".encode(), key=self._key,
                            digest_size=4).digest()
        offset = int.from_bytes(h, "big")
        for i in range(n):
            port = lo + (offset + i) % n
            users = self.ports.get(port)
            if not users:
                return port
            if remote is not None and (port, remote[0], remote[1]) not in self.by_tuple:
                if all(not self.conns[c].port_explicit and self.conns[c].state is not S.LISTEN for c in users):
                    return port
        return None

    # ================================================================ ways in: segments and timers
    def segment_in(self, now: float, src: str, dst: str, seg: TcpSegment) -> None:
        """One parsed segment from the network.  Never raises (a peer's fault is counted)."""
        self.counters["in_segs"] += 1
        try:
            conn = self.by_tuple.get((seg.dst_port, src, seg.src_port))
            if conn is not None:
                if conn.state is S.TIME_WAIT:
                    rcv.time_wait_arrives(self, conn, now, src, dst, seg)
                else:
                    rcv.segment_arrives(self, conn, now, seg)
                return
            if not self.is_local(dst):
                self.count("drop_not_local")
                return
            if seg.src_port == 0 or seg.dst_port == 0:
                self.count("drop_port_zero")
                return
            listener = self.listeners.get(seg.dst_port)
            if listener is not None:
                listener_mod.listen_arrives(self, listener, now, src, dst, seg)
                return
            self.count("drop_no_socket")
            self.reply_reset(dst, src, seg)
        except Exception:
            if self.strict:
                raise
            self.counters["in_errs"] += 1
            self.count("drop_internal_error")
            self._record_internal_error()

    def timer_fired(self, now: float, key: tuple[int, str]) -> None:
        """A timer went off.  Stale, early, repeated or unknown keys are tolerated."""
        if not isinstance(key, (tuple, list)) or len(key) != 2:
            self.count("timer_bad_key")
            return
        try:
            conn_id, kind = key
            conn = self.conns.get(conn_id) if isinstance(conn_id, int) else None
            if conn is None or kind not in conn.timers:
                self.count("timer_stale")
                return
            conn.armed[kind] = None
            deadline = conn.timers[kind]
            if deadline is None:
                self.count("timer_stale")
                return
            if deadline > now + timers.EPSILON:
                conn.armed[kind] = deadline          # moved later (or fired early): wait again
                self._effects.timers.append(((conn_id, kind), deadline))
                return
            conn.timers[kind] = None
            timers.HANDLERS[kind](self, conn, now)
        except Exception:
            if self.strict:
                raise
            self.count("timer_internal_error")
            self._record_internal_error()

    def _record_internal_error(self) -> None:
        """A bug in us, survived: keep its traceback for the shell to log (the core does no I/O)."""
        if len(self.internal_errors) < 20:
            self.internal_errors.append(traceback.format_exc())

    # ================================================================ ways in: the socket calls
    def _sock(self, sid: int) -> Connection:
        conn = self.conns.get(sid)
        if conn is None or not conn.user_open:
            raise TcpError(errno.EBADF)
        return conn

    def _pop_error(self, conn: Connection) -> int:
        err = conn.pending_error
        conn.pending_error = 0
        return err

    def socket(self, now: float, cid: int | None = None) -> int:
        """A new socket.  The caller may name it (an id from NAMED_SOCKET_IDS up, free), so that
        libsock's socket() can be posted instead of waiting for the engine's choice."""
        if cid is not None:
            if not isinstance(cid, int) or not NAMED_SOCKET_IDS <= cid < 1 << 63 or cid in self.conns:
                raise TcpError(errno.EINVAL)
        return self.new_connection(cid=cid).id

    def bind(self, now: float, sid: int, addr: str, port: int) -> None:
        conn = self._sock(sid)
        if conn.bound or conn.state is not S.CLOSED:
            raise TcpError(errno.EINVAL)
        if addr in ("", "0.0.0.0"):
            addr = "0.0.0.0"
        elif not self.is_local(addr):
            raise TcpError(errno.EADDRNOTAVAIL)
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise TcpError(errno.EINVAL)
        if port == 0:
            port = self._pick_port(now, None)
            if port is None:
                raise TcpError(errno.EADDRINUSE)
        elif self._port_conflict(conn, port):
            raise TcpError(errno.EADDRINUSE)
        conn.local_addr = addr
        self._bind(conn, port, explicit=True)

    def listen(self, now: float, sid: int, backlog: int) -> None:
        conn = self._sock(sid)
        cap = self.config.max_backlog
        backlog = cap if backlog < 0 or backlog > cap else backlog
        if conn.sock_state != SS_UNCONNECTED:
            raise TcpError(errno.EINVAL)
        if conn.state is S.LISTEN:
            conn.backlog = backlog
            return
        if conn.state is not S.CLOSED:
            raise TcpError(errno.EINVAL)
        if not conn.bound:
            port = self._pick_port(now, None)
            if port is None:
                raise TcpError(errno.EADDRINUSE)
            self._bind(conn, port, explicit=True)
        elif self._port_conflict(conn, conn.local_port):
            raise TcpError(errno.EADDRINUSE)
        conn.port_explicit = True
        conn.backlog = backlog
        self._reset_tcb(conn)
        self.set_state(conn, now, S.LISTEN, "listen")
        self.listeners[conn.local_port] = conn

    def _reset_tcb(self, conn: Connection) -> None:
        """Fresh connection state for a socket that is (re)used for a new connection."""
        conn.rcv_shutdown = conn.snd_shutdown = conn.done = False
        conn.pending_error = 0
        conn.send_buffer = SendBuffer()
        conn.fin_queued = False
        conn.recv_queue = deque()
        conn.recv_queue_len = conn.recv_offset = 0
        conn.ooo = []
        conn.ooo_len = 0
        conn.fin_seq = None
        conn.srtt = None
        conn.rttvar = 0.0
        conn.rto = self.config.rto_initial
        conn.retransmits = conn.probes_out = conn.persist_backoff = conn.dupacks = 0
        conn.in_recovery = conn.rto_recovery = False
        conn.scoreboard = []

    def connect(self, now: float, sid: int, addr: str, port: int) -> None:
        """Start the handshake: raises EINPROGRESS.  Like Linux, calling again while it runs raises
        EALREADY; the first call after it completed returns None (connected), later ones EISCONN;
        after a failure the call raises the error once and the socket is unconnected again."""
        conn = self._sock(sid)
        if conn.sock_state == SS_CONNECTED:
            raise TcpError(errno.EISCONN)
        if conn.sock_state == SS_CONNECTING:
            state = conn.state
            if state is S.SYN_SENT or state is S.SYN_RCVD:
                raise TcpError(errno.EALREADY)
            if state is S.CLOSED:
                conn.sock_state = SS_UNCONNECTED
                raise TcpError(self._pop_error(conn) or errno.ECONNABORTED)
            conn.sock_state = SS_CONNECTED
            return None
        if conn.state is not S.CLOSED:
            raise TcpError(errno.EISCONN)
        try:
            ipaddress.IPv4Address(addr)
        except (ipaddress.AddressValueError, ValueError, TypeError):
            raise TcpError(errno.EINVAL) from None
        if addr == "0.0.0.0":
            addr = LOOPBACK           # Linux: a connect to INADDR_ANY goes to the loopback address
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise TcpError(errno.EINVAL)
        if not conn.bound:
            lport = self._pick_port(now, (addr, port))
            if lport is None:
                raise TcpError(errno.EADDRNOTAVAIL)
            self._bind(conn, lport, explicit=False)
        elif (conn.local_port, addr, port) in self.by_tuple:
            raise TcpError(errno.EADDRNOTAVAIL)
        self._reset_tcb(conn)
        if conn.local_addr == "0.0.0.0":    # the source address: the one on the route's way out
            conn.local_addr = LOOPBACK if addr.startswith("127.") else self.local_addr
        conn.remote_addr = addr
        conn.remote_port = port
        conn.active_open = True
        conn.rcv_wscale = snd.choose_wscale(snd.rcvbuf_ceiling(conn))
        iss = self.isn(now, conn.local_port, addr, port)
        conn.iss = conn.snd_una = iss
        conn.snd_nxt = conn.snd_max = conn.send_buffer_seq = (iss + 1) & MASK
        conn.rtt_seq = conn.snd_nxt
        conn.rtt_time = now
        self.by_tuple[conn.key] = conn
        self.set_state(conn, now, S.SYN_SENT, "connect / SYN")
        snd.send_syn(self, conn)
        self.arm(conn, "retransmit", now + conn.rto)
        self.arm(conn, "connect", now + self.config.connect_timeout)
        self.counters["active_opens"] += 1
        conn.sock_state = SS_CONNECTING
        raise TcpError(errno.EINPROGRESS)

    def accept(self, now: float, sid: int) -> tuple[int, tuple[str, int]]:
        conn = self._sock(sid)
        if conn.state is not S.LISTEN:
            raise TcpError(errno.EINVAL)
        while conn.accept_queue:
            child = self.conns.get(conn.accept_queue.popleft())
            if child is None:
                continue
            child.queued = False
            child.parent = None
            child.user_open = True
            child.sock_state = SS_CONNECTED
            return child.id, (child.remote_addr, child.remote_port)
        raise TcpError(errno.EAGAIN)

    def send(self, now: float, sid: int, data: bytes, flags: int = 0) -> int:
        conn = self._sock(sid)
        state = conn.state
        if state is not S.ESTABLISHED and state is not S.CLOSE_WAIT:
            if conn.pending_error:
                raise TcpError(self._pop_error(conn))
            if state is S.SYN_SENT or state is S.SYN_RCVD:
                raise TcpError(errno.EAGAIN)
            raise TcpError(errno.EPIPE)
        if conn.pending_error or conn.snd_shutdown:
            raise TcpError(self._pop_error(conn) or errno.EPIPE)
        size = len(data)
        if not size:
            return 0
        buf = conn.send_buffer
        room = conn.so_sndbuf - len(buf)
        if room <= 0:
            conn.nospace = True
            raise TcpError(errno.EAGAIN)
        if size > room:
            buf.append(memoryview(data)[:room])
            size = room
            conn.nospace = True
        else:
            buf.append(data)
        snd.output(self, conn, now)
        return size

    def send_posted(self, now: float, sid: int, data: bytes) -> None:
        """A send libsock has already returned from, within the room `send_credit`
        promised: queue all of it, past SO_SNDBUF if another thread's send took the
        room first.  If the connection can no longer send, the data is dropped, as
        Linux drops queued data when a reset arrives, and the error stays pending
        for the socket's next call."""
        conn = self._sock(sid)
        if not self._can_take_data(conn):
            self.counters["posted_send_dropped"] += 1
            return
        conn.send_buffer.append(data)
        snd.output(self, conn, now)

    def send_credit(self, sid: int) -> int:
        """Bytes libsock may send without waiting for an answer: the send buffer's free
        room while the connection can send, else 0 (every send then asks)."""
        conn = self.conns.get(sid)
        if conn is None or not self._can_take_data(conn):
            return 0
        return max(0, conn.so_sndbuf - len(conn.send_buffer))

    @staticmethod
    def _can_take_data(conn: Connection) -> bool:
        """A send would queue data now (no error to report first, not shut for writing)."""
        return (conn.state is S.ESTABLISHED or conn.state is S.CLOSE_WAIT) and not conn.pending_error \
            and not conn.snd_shutdown

    def recv(self, now: float, sid: int, size: int, flags: int = 0) -> bytes:
        conn = self._sock(sid)
        state = conn.state
        if state is S.LISTEN:
            raise TcpError(errno.ENOTCONN)
        if size < 0:
            raise TcpError(errno.EINVAL)
        if size == 0:
            return b""
        if conn.recv_queue_len:
            if flags & MSG_PEEK:
                return self._peek(conn, size)
            data = self._take(conn, size)
            if not conn.rcvbuf_locked:
                self._autotune_rcvbuf(conn, now, len(data))
            if state in (S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2) and snd.window_after_read(conn):
                self.counters["window_updates"] += 1
                snd.send_ack(self, conn)          # Linux cleanup_rbuf: tell the peer the window opened
            return data
        if conn.done:
            return b""
        if conn.pending_error:
            raise TcpError(self._pop_error(conn))
        if conn.rcv_shutdown:
            return b""
        if state is S.CLOSED:
            raise TcpError(errno.ENOTCONN)
        raise TcpError(errno.EAGAIN)

    @staticmethod
    def _take(conn: Connection, size: int) -> bytes:
        q = conn.recv_queue
        off = conn.recv_offset
        first = q[0]
        flen = len(first)
        if flen - off > size:                                 # part of the first chunk
            conn.recv_offset = off + size
            conn.recv_queue_len -= size
            return first[off:off + size]
        parts = []
        got = 0
        while q and got < size:
            chunk = q[0]
            avail = len(chunk) - off
            want = size - got
            if avail <= want:
                parts.append(chunk[off:] if off else chunk)
                got += avail
                q.popleft()
                off = 0
            else:
                parts.append(chunk[off:off + want])
                got += want
                off += want
        conn.recv_offset = off
        conn.recv_queue_len -= got
        return parts[0] if len(parts) == 1 else b"".join(parts)

    @staticmethod
    def _peek(conn: Connection, size: int) -> bytes:
        parts = []
        got = 0
        off = conn.recv_offset
        for chunk in conn.recv_queue:
            piece = chunk[off:off + size - got]
            off = 0
            parts.append(piece)
            got += len(piece)
            if got >= size:
                break
        return b"".join(parts)

    def shutdown(self, now: float, sid: int, how: int) -> None:
        conn = self._sock(sid)
        if how not in (SHUT_RD, SHUT_WR, SHUT_RDWR):
            raise TcpError(errno.EINVAL)
        rd = how != SHUT_WR
        wr = how != SHUT_RD
        state = conn.state
        if state is S.CLOSED or state is S.TIME_WAIT:
            conn.rcv_shutdown |= rd
            conn.snd_shutdown |= wr
            self.wake(conn)
            raise TcpError(errno.ENOTCONN)
        if state is S.LISTEN:
            if rd:
                listener_mod.close_listener(self, conn, now)
                conn.sock_state = SS_UNCONNECTED
            return
        if state is S.SYN_SENT:
            self.abort(conn, now, 0, "shutdown while connecting")
            conn.sock_state = SS_UNCONNECTED
            return
        if rd:
            conn.rcv_shutdown = True
        if wr and not conn.snd_shutdown:
            conn.snd_shutdown = True
            self._send_fin(conn, now, "shutdown(SHUT_WR) / FIN")
        self.wake(conn)

    def _send_fin(self, conn: Connection, now: float, cause: str) -> None:
        """tcp_close_state + tcp_send_fin: queue our FIN behind the data."""
        state = conn.state
        if state is S.ESTABLISHED or state is S.SYN_RCVD:
            self.set_state(conn, now, S.FIN_WAIT_1, cause)
        elif state is S.CLOSE_WAIT:
            self.set_state(conn, now, S.LAST_ACK, cause)
        else:
            return
        conn.fin_queued = True
        if state is not S.SYN_RCVD:
            snd.output(self, conn, now)

    def close(self, now: float, sid: int) -> None:
        conn = self._sock(sid)
        conn.user_open = False
        state = conn.state
        if state is S.LISTEN:
            listener_mod.close_listener(self, conn, now)
            return
        if state is S.CLOSED:
            self.forget(conn)
            return
        if state is S.SYN_SENT:
            self.set_state(conn, now, S.CLOSED, "close")
            return
        if state is S.TIME_WAIT:
            return
        linger_zero = conn.so_linger[0] and conn.so_linger[1] == 0
        if conn.recv_queue_len or linger_zero:
            # Linux tcp_close: unread data -> RST (RFC 2525 2.17); SO_LINGER 0 -> abort with RST
            self.counters["abort_on_close" if conn.recv_queue_len else "abort_on_linger"] += 1
            if state not in (S.CLOSING, S.LAST_ACK) or conn.unsent > 0:
                snd.send_rst(self, conn)
            conn.recv_queue.clear()
            conn.recv_queue_len = 0
            self.abort(conn, now, 0, "close with unread data / RST" if not linger_zero else "SO_LINGER 0 / RST")
            return
        conn.rcv_shutdown = True
        if not conn.snd_shutdown:
            conn.snd_shutdown = True
            self._send_fin(conn, now, "close / FIN")
        if conn.state is S.FIN_WAIT_2:
            self.arm(conn, "fin_wait_2", now + self.config.fin_wait2_timeout)

    # ---------------------------------------------------------------- options
    def setsockopt(self, now: float, sid: int, level: int, name: int, value) -> None:
        conn = self._sock(sid)
        if level == SOL_SOCKET:
            if name == SO_LINGER:
                if isinstance(value, (bytes, bytearray)) and len(value) >= 8:
                    value = struct.unpack("ii", bytes(value[:8]))
                if not isinstance(value, (tuple, list)) or len(value) != 2:
                    raise TcpError(errno.EINVAL)
                conn.so_linger = (1 if int(value[0]) else 0, max(int(value[1]), 0))
                return
            if name not in (SO_REUSEADDR, SO_KEEPALIVE, SO_SNDBUF, SO_RCVBUF):
                raise TcpError(errno.ENOPROTOOPT)
            val = self._int_value(value)
            if name == SO_REUSEADDR:
                conn.so_reuseaddr = bool(val)
            elif name == SO_KEEPALIVE:
                on = bool(val)
                if on and not conn.so_keepalive and conn.state not in (S.CLOSED, S.LISTEN, S.SYN_SENT, S.TIME_WAIT):
                    conn.so_keepalive = True
                    self.arm(conn, "keepalive", conn.last_recv + self.keepalive_idle(conn))
                conn.so_keepalive = on
                if not on:
                    conn.timers["keepalive"] = None
            elif name == SO_SNDBUF:
                conn.so_sndbuf = max(2 * min(val, WMEM_MAX), SOCK_MIN_SNDBUF)
                conn.sndbuf_locked = True
                if conn.nospace and self.writable(conn):
                    self.wake(conn)
            else:
                conn.so_rcvbuf = max(2 * min(val, RMEM_MAX), SOCK_MIN_RCVBUF)
                conn.rcvbuf_locked = True
            return
        if level == IPPROTO_TCP:
            if name not in (TCP_NODELAY, TCP_MAXSEG, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT):
                raise TcpError(errno.ENOPROTOOPT)
            val = self._int_value(value)
            if name == TCP_NODELAY:
                conn.tcp_nodelay = bool(val)
                if val and conn.send_buffer:
                    snd.output(self, conn, now)      # Linux pushes pending frames
            elif name == TCP_MAXSEG:
                if val and not TCP_MIN_MSS <= val <= MAX_TCP_WINDOW:
                    raise TcpError(errno.EINVAL)
                conn.tcp_maxseg = val
            elif name == TCP_KEEPIDLE:
                if not 1 <= val <= MAX_TCP_KEEPIDLE:
                    raise TcpError(errno.EINVAL)
                conn.tcp_keepidle = float(val)
                if conn.so_keepalive and conn.timers["keepalive"] is not None:
                    self.arm(conn, "keepalive", conn.last_recv + conn.tcp_keepidle)
            elif name == TCP_KEEPINTVL:
                if not 1 <= val <= MAX_TCP_KEEPINTVL:
                    raise TcpError(errno.EINVAL)
                conn.tcp_keepintvl = float(val)
            else:
                if not 1 <= val <= MAX_TCP_KEEPCNT:
                    raise TcpError(errno.EINVAL)
                conn.tcp_keepcnt = val
            return
        raise TcpError(errno.ENOPROTOOPT)

    @staticmethod
    def _int_value(value) -> int:
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, (bytes, bytearray)) and len(value) >= 4:
            return struct.unpack("i", bytes(value[:4]))[0]
        raise TcpError(errno.EINVAL)

    def getsockopt(self, now: float, sid: int, level: int, name: int):
        conn = self._sock(sid)
        cfg = self.config
        if level == SOL_SOCKET:
            if name == SO_REUSEADDR:
                return int(conn.so_reuseaddr)
            if name == SO_KEEPALIVE:
                return int(conn.so_keepalive)
            if name == SO_SNDBUF:
                return conn.so_sndbuf
            if name == SO_RCVBUF:
                return conn.so_rcvbuf
            if name == SO_LINGER:
                return conn.so_linger
            if name == SO_ERROR:
                return self._pop_error(conn)
            if name == SO_TYPE:
                return 1
            if name == SO_ACCEPTCONN:
                return int(conn.state is S.LISTEN)
            raise TcpError(errno.ENOPROTOOPT)
        if level == IPPROTO_TCP:
            if name == TCP_NODELAY:
                return int(conn.tcp_nodelay)
            if name == TCP_MAXSEG:
                if conn.state is S.CLOSED or conn.state is S.LISTEN:
                    return conn.tcp_maxseg or 536
                return conn.send_mss
            if name == TCP_KEEPIDLE:
                return int(conn.tcp_keepidle or cfg.keepalive_time)
            if name == TCP_KEEPINTVL:
                return int(conn.tcp_keepintvl or cfg.keepalive_interval)
            if name == TCP_KEEPCNT:
                return conn.tcp_keepcnt or cfg.keepalive_probes
            raise TcpError(errno.ENOPROTOOPT)
        if level == IPPROTO_IP:
            raise TcpError(errno.ENOPROTOOPT)
        raise TcpError(errno.EOPNOTSUPP)        # Linux's ip_getsockopt: a level that is not SOL_IP

    def getsockname(self, now: float, sid: int) -> tuple[str, int]:
        conn = self._sock(sid)
        return (conn.local_addr, conn.local_port)

    def getpeername(self, now: float, sid: int) -> tuple[str, int]:
        conn = self._sock(sid)
        if conn.state in (S.CLOSED, S.LISTEN, S.SYN_SENT) or not conn.remote_port:
            raise TcpError(errno.ENOTCONN)
        return (conn.remote_addr, conn.remote_port)

    def poll(self, sid: int) -> int:
        """Linux tcp_poll's mask for this socket (POLLNVAL for an unknown id)."""
        conn = self.conns.get(sid)
        if conn is None or not conn.user_open:
            return POLLNVAL
        state = conn.state
        if state is S.LISTEN:
            return POLLIN if conn.accept_queue else 0
        mask = 0
        if (conn.rcv_shutdown and conn.snd_shutdown) or state is S.CLOSED:
            mask |= POLLHUP
        if conn.rcv_shutdown:
            mask |= POLLIN | POLLRDHUP
        if state is not S.SYN_SENT and state is not S.SYN_RCVD:
            if conn.recv_queue_len:
                mask |= POLLIN
            if not conn.snd_shutdown:
                if self.writable(conn):
                    mask |= POLLOUT
                else:
                    conn.nospace = True
            else:
                mask |= POLLOUT
        if conn.pending_error:
            mask |= POLLERR
        return mask


__all__ = ["TcpEngine", "TcpError", "Effects", "Transition", "TcpConfig", "State"]
