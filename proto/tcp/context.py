"""What a connection's code may use of the engine around it (smoltcp's `cx: &mut Context`).

The input path (rcv.py), the output path (snd.py), loss recovery, the timers
and the listener are handed a `Context`, never the engine: the settings, the
counters, the effect sink (segments out, timers to arm, sockets to wake,
transitions), THE one place a state changes, and the tables that a transition
or a new connection touches.  The engine (engine.py) owns a Context and adds
the ways in and out; the socket calls (sockets.py) work on it too.

A leaf module: it imports no other part of the TCP but the plain data types.
"""
from __future__ import annotations

import hashlib
import traceback

from proto.tcp import seqnum
from proto.tcp.config import TcpConfig
from proto.tcp.congestion import make as make_congestion_control
from proto.tcp.connection import TIMER_KINDS, Connection
from proto.tcp.counters import Counters
from proto.tcp.effects import Effects
from proto.tcp.ports import PortTable
from proto.tcp.rtt import RttEstimator
from proto.tcp.state import State, Transition, allowed
from proto.wire.tcp import FLAGS_BY_VALUE, TcpSegment

S = State
FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
RST_ACK = RST | ACK
MASK = seqnum.MASK


def reset_for(seg: TcpSegment) -> TcpSegment | None:
    """The RST answering a segment that has no connection (RFC 9293 3.10.7.1); None for a RST."""
    flags = int(seg.flags)
    if flags & RST:
        return None
    if flags & ACK:
        return TcpSegment(seg.dst_port, seg.src_port, seg.ack, 0, FLAGS_BY_VALUE[RST], 0)
    seg_len = len(seg.payload) + (flags & SYN and 1) + (flags & FIN)
    return TcpSegment(seg.dst_port, seg.src_port, 0, (seg.seq + seg_len) & MASK, FLAGS_BY_VALUE[RST_ACK], 0)


class Context:
    def __init__(self, config: TcpConfig, local_addr: str, secret: bytes):
        self.config = config
        self.local_addr = local_addr
        self.key = secret if len(secret) <= 32 else hashlib.blake2s(secret).digest()
        self.counters = Counters()
        self.effects = Effects()
        self.conns: dict[int, Connection] = {}
        self.by_tuple: dict[tuple[int, str, int], Connection] = {}   # (local port, remote addr, remote port)
        self.listeners: dict[int, Connection] = {}                     # local port -> listener
        self.ports = PortTable(self.conns, self.by_tuple, self.key, config.ephemeral_ports)
        self.strict = False          # tests: let a bug raise out of the ways in
        self.internal_errors: list[str] = []     # tracebacks of survived bugs, drained and logged by the shell
        self.now = 0.0               # the time of the event being handled (set by every way in)
        self.next_id = 1
        # what tcpd's store must write at its next commit (services/tcp/store.py): the control
        # blocks whose structure changed, and the connections whose streams may have moved
        self.touched: set[int] = set()
        self.active: set[int] = set()
        # tcp.mem_max: the bytes every receive and send queue holds, as last charged (rcvbuf.charge)
        self.mem_charged: dict[int, int] = {}
        self.mem_held = 0
        self._challenge_start = float("-inf")
        self._challenge_count = 0

    # ---------------------------------------------------------------- counting, waking, sending
    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def wake(self, conn: Connection) -> None:
        """The socket's poll mask may have changed: its sleepers are tried again."""
        if conn.user_open:
            self.effects.woken.add(conn.id)

    def transmit(self, src: str, dst: str, seg: TcpSegment) -> None:
        self.effects.segments.append((src, dst, seg))
        self.counters["out_segs"] += 1

    def reply_reset(self, src: str, dst: str, seg: TcpSegment) -> None:
        """Answer a segment with a RST (never a reset to a reset)."""
        rst = reset_for(seg)
        if rst is not None:
            self.transmit(src, dst, rst)
            self.counters["out_rsts"] += 1

    def challenge_allowed(self, now: float) -> bool:
        """RFC 5961 challenge ACKs, at most config.challenge_ack_limit a second (Linux's limit)."""
        if now - self._challenge_start >= 1.0:
            self._challenge_start = now
            self._challenge_count = 0
        if self._challenge_count >= self.config.challenge_ack_limit:
            return False
        self._challenge_count += 1
        return True

    def record_internal_error(self) -> None:
        """A bug in us, survived: keep its traceback for the shell to log (the core does no I/O)."""
        if len(self.internal_errors) < 20:
            self.internal_errors.append(traceback.format_exc())

    # ---------------------------------------------------------------- timers (see timers.py)
    def arm(self, conn: Connection, kind: str, deadline: float) -> None:
        conn.timers[kind] = deadline
        armed = conn.armed[kind]
        if armed is None or deadline < armed:
            conn.armed[kind] = deadline
            self.effects.timers.append(((conn.id, kind), deadline))
            if kind == "time_wait":
                self._cancel_lazy_timers(conn)

    @staticmethod
    def cancel(conn: Connection, kind: str) -> None:
        """Stop a timer, lazily: no message to the timer service now; if it fires at the
        deadline it still holds, the engine sees the timer stopped and ignores it (timers.py)."""
        conn.timers[kind] = None

    def _cancel_lazy_timers(self, conn: Connection) -> None:
        """Entering TIME_WAIT, whose timer message leaves anyway: let it also cancel the
        timers cancelled lazily (delayed ACK, retransmission, FIN_WAIT_2), which would
        otherwise each fire for nothing after a short connection.  Established
        connections keep them lazy: cancelling there costs a message per exchange."""
        timers, armed, out = conn.timers, conn.armed, self.effects.timers
        for kind, held in armed.items():
            if held is not None and timers[kind] is None:
                armed[kind] = None
                out.append(((conn.id, kind), None))

    @staticmethod
    def writable(conn: Connection) -> bool:
        """Linux sk_stream_is_writeable: free space at least half of what is queued."""
        queued = len(conn.send_buffer)
        free = conn.so_sndbuf - queued
        return free > 0 and 2 * free >= queued

    def keepalive_idle(self, conn: Connection) -> float:
        return conn.tcp_keepidle or self.config.keepalive_time

    # ---------------------------------------------------------------- states
    def set_state(self, conn: Connection, now: float, new: State, cause: str) -> None:
        """THE one place a state changes: checked against state.TRANSITIONS and recorded."""
        old = conn.state
        if old is new:
            return
        if not allowed(old, new):
            raise AssertionError(f"illegal transition {old.name} -> {new.name} ({cause})")
        conn.state = new
        self.touched.add(conn.id)
        if conn.parent is not None:
            self.touched.add(conn.parent)       # its SYN queue or accept queue changes with it
        self.effects.transitions.append(Transition(
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
                self.effects.timers.append(((conn.id, kind), None))
        if conn.parent is not None and not conn.queued:
            parent = self.conns.get(conn.parent)
            if parent is not None:
                parent.syn_queue.discard(conn.id)
            conn.parent = None
        conn.rcv_shutdown = conn.snd_shutdown = True
        conn.ack_pending = conn.ack_now = False
        if not conn.port_explicit:
            self.ports.unbind(conn)
        if not conn.user_open and not conn.queued:
            self.forget(conn)
        else:
            self.wake(conn)

    def forget(self, conn: Connection) -> None:
        self.mem_held -= self.mem_charged.pop(conn.id, 0)
        self.counters["mem_held"] = self.mem_held
        self.ports.unbind(conn)
        self.conns.pop(conn.id, None)
        self.touched.add(conn.id)

    def abort(self, conn: Connection, now: float, error: int, cause: str) -> None:
        """End the connection at once (reset received or sent, timeout): CLOSED, queues flushed."""
        if error:
            conn.pending_error = error
        conn.send_buffer.clear()
        conn.fin_queued = False
        conn.recv_buffer.drop_out_of_order()
        self.set_state(conn, now, S.CLOSED, cause)
        self.wake(conn)

    def enter_time_wait(self, conn: Connection, now: float, cause: str) -> None:
        self.set_state(conn, now, S.TIME_WAIT, cause)
        for kind in ("retransmit", "persist", "keepalive", "fin_wait_2", "connect"):
            self.cancel(conn, kind)
        self.arm(conn, "time_wait", now + 2 * self.config.msl)

    def fin_wait_2(self, conn: Connection, now: float) -> None:
        self.set_state(conn, now, S.FIN_WAIT_2, "ACK of FIN")
        self.cancel(conn, "retransmit")
        if not conn.user_open:
            self.arm(conn, "fin_wait_2", now + self.config.fin_wait2_timeout)

    # ---------------------------------------------------------------- connections and addresses
    def is_local(self, addr: str) -> bool:
        """Ours: the stack's address, or the loopback network 127.0.0.0/8 (ipd loops both back)."""
        return addr == self.local_addr or addr.startswith("127.")

    def isn(self, now: float, local_port: int, remote_addr: str, remote_port: int) -> int:
        """RFC 6528: ISN = M + F(4-tuple, secret), M a 4-microsecond clock."""
        h = hashlib.blake2s(f"{self.local_addr}:{local_port}>{remote_addr}:{remote_port}".encode(),
                            key=self.key, digest_size=4).digest()
        return (int.from_bytes(h, "big") + int(now * 250_000)) & MASK

    def ts_offset(self, conn: Connection) -> int:
        """A per-connection offset for TSval, so that our clock is not readable from outside
        (RFC 7323 5.4; Linux's secure tsoffset)."""
        h = hashlib.blake2s(f"ts:{conn.local_addr}:{conn.local_port}>{conn.remote_addr}:{conn.remote_port}".encode(),
                            key=self.key, digest_size=4).digest()
        return int.from_bytes(h, "big")

    def tsval(self, conn: Connection) -> int:
        """Our timestamp clock for this connection: milliseconds (Linux's tcp_clock_ms)."""
        return (int(self.now * 1000) + conn.ts_offset) & MASK

    def new_connection(self, state: State = S.CLOSED, cid: int | None = None) -> Connection:
        if cid is None:
            cid = self.next_id
            self.next_id += 1
        conn = Connection(cid, state=state, so_rcvbuf=self.config.rcvbuf, so_sndbuf=self.config.sndbuf,
                          rtt=RttEstimator(rto=self.config.rto_initial), cc=make_congestion_control(self.config.congestion))
        self.conns[cid] = conn
        self.touched.add(cid)
        return conn

    def attach(self, conn: Connection, local_port: int) -> None:
        """Put a child connection into the demultiplexing table and the port table."""
        conn.local_port = local_port
        conn.bound = True
        self.ports.users.setdefault(local_port, set()).add(conn.id)
        self.by_tuple[conn.key] = conn
