"""The socket calls (the INET socket layer: inet_bind, inet_listen, inet_connect, inet_accept,
tcp_sendmsg, tcp_recvmsg, inet_shutdown, tcp_close, tcp_poll).

Every call is non-blocking: one that would block raises TcpError(EAGAIN,
EINPROGRESS or EALREADY) and the shell parks it until the socket is woken.
`SocketCalls` is a part of the engine (mixed into TcpEngine): it works on the
engine's context, `self.cx`.
"""
from __future__ import annotations

import errno
import ipaddress

from proto.ipc.messages import NAMED_SOCKET_IDS
from proto.poll import POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT, POLLRDHUP
from proto.tcp import delack, seqnum, snd
from proto.tcp.congestion import make as make_congestion_control
from proto.tcp.connection import (SS_CONNECTED, SS_CONNECTING, SS_UNCONNECTED,
                                  Connection)
from proto.tcp.context import Context
from proto.tcp.listener import close_listener
from proto.tcp.rcvbuf import RecvBuffer, charge, choose_wscale, rcvbuf_ceiling, window_after_read
from proto.tcp.sendbuf import SendBuffer
from proto.tcp.state import Recovery, State

S = State
MASK = seqnum.MASK
LOOPBACK = "127.0.0.1"
MSG_PEEK = 0x2
SHUT_RD, SHUT_WR, SHUT_RDWR = 0, 1, 2

SNDBUF_MIN = 4096       # what a socket may always queue, past tcp.mem_max too (Linux tcp_wmem[0])


class TcpError(Exception):
    """A user's bad call, or the socket's pending error: `errno` is Linux's value."""

    def __init__(self, err: int, message: str | None = None):
        super().__init__(err, message or errno.errorcode.get(err, str(err)))
        self.errno = err


def pop_error(conn: Connection) -> int:
    """The socket's pending error (sk_err), reported once."""
    err = conn.pending_error
    conn.pending_error = 0
    return err


class SocketCalls:
    cx: Context

    def _sock(self, sid: int) -> Connection:
        conn = self.cx.conns.get(sid)
        if conn is None or not conn.user_open:
            raise TcpError(errno.EBADF)
        self.cx.active.add(sid)          # a call may move its streams (tcpd's store looks at it)
        return conn

    def socket(self, now: float, cid: int | None = None) -> int:
        """A new socket.  The caller may name it (an id from NAMED_SOCKET_IDS up, free), so that
        libsock's socket() can be posted instead of waiting for the engine's choice."""
        if cid is not None:
            if not isinstance(cid, int) or not NAMED_SOCKET_IDS <= cid < 1 << 63 or cid in self.cx.conns:
                raise TcpError(errno.EINVAL)
        return self.cx.new_connection(cid=cid).id

    def bind(self, now: float, sid: int, addr: str, port: int) -> None:
        conn = self._sock(sid)
        if conn.bound or conn.state is not S.CLOSED:
            raise TcpError(errno.EINVAL)
        if addr in ("", "0.0.0.0"):
            addr = "0.0.0.0"
        elif not self.cx.is_local(addr):
            raise TcpError(errno.EADDRNOTAVAIL)
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise TcpError(errno.EINVAL)
        if port == 0:
            port = self.cx.ports.pick(now, None)
            if port is None:
                raise TcpError(errno.EADDRINUSE)
        elif self.cx.ports.conflict(conn, port):
            raise TcpError(errno.EADDRINUSE)
        conn.local_addr = addr
        self.cx.ports.bind(conn, port, True)

    def listen(self, now: float, sid: int, backlog: int) -> None:
        conn = self._sock(sid)
        cap = self.cx.config.max_backlog
        backlog = cap if backlog < 0 or backlog > cap else backlog
        if conn.sock_state != SS_UNCONNECTED:
            raise TcpError(errno.EINVAL)
        if conn.state is S.LISTEN:
            conn.backlog = backlog
            return
        if conn.state is not S.CLOSED:
            raise TcpError(errno.EINVAL)
        if not conn.bound:
            port = self.cx.ports.pick(now, None)
            if port is None:
                raise TcpError(errno.EADDRINUSE)
            self.cx.ports.bind(conn, port, True)
        elif self.cx.ports.conflict(conn, conn.local_port):
            raise TcpError(errno.EADDRINUSE)
        conn.port_explicit = True
        conn.backlog = backlog
        self._reset_tcb(conn)
        self.cx.set_state(conn, now, S.LISTEN, "listen")
        self.cx.listeners[conn.local_port] = conn

    def _reset_tcb(self, conn: Connection) -> None:
        """Fresh connection state for a socket that is (re)used for a new connection."""
        conn.rcv_shutdown = conn.snd_shutdown = conn.done = False
        conn.pending_error = 0
        conn.send_buffer = SendBuffer()
        conn.fin_queued = False
        conn.recv_buffer = RecvBuffer()
        conn.fin_seq = None
        conn.rtt.srtt = None
        conn.rtt.rttvar = 0.0
        conn.rtt.rto = self.cx.config.rto_initial
        conn.retransmits = conn.probes_out = conn.persist_backoff = conn.dupacks = 0
        conn.recovery = Recovery.OPEN
        conn.cc = make_congestion_control(conn.cc.name)
        conn.scoreboard = []

    def connect(self, now: float, sid: int, addr: str, port: int) -> None:
        """Start the handshake: raises EINPROGRESS.  Like Linux, calling again while it runs raises
        EALREADY; the first call after it completed returns None (connected), later ones EISCONN;
        after a failure the call raises the error once and the socket is unconnected again."""
        self.cx.now = now
        conn = self._sock(sid)
        if conn.sock_state == SS_CONNECTED:
            raise TcpError(errno.EISCONN)
        if conn.sock_state == SS_CONNECTING:
            state = conn.state
            if state is S.SYN_SENT or state is S.SYN_RCVD:
                raise TcpError(errno.EALREADY)
            if state is S.CLOSED:
                conn.sock_state = SS_UNCONNECTED
                raise TcpError(pop_error(conn) or errno.ECONNABORTED)
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
            lport = self.cx.ports.pick(now, (addr, port))
            if lport is None:
                raise TcpError(errno.EADDRNOTAVAIL)
            self.cx.ports.bind(conn, lport, False)
        elif (conn.local_port, addr, port) in self.cx.by_tuple:
            raise TcpError(errno.EADDRNOTAVAIL)
        self._reset_tcb(conn)
        if conn.local_addr == "0.0.0.0":    # the source address: the one on the route's way out
            conn.local_addr = LOOPBACK if addr.startswith("127.") else self.cx.local_addr
        conn.remote_addr = addr
        conn.remote_port = port
        conn.active_open = True
        conn.rcv_wscale = choose_wscale(rcvbuf_ceiling(conn))
        iss = self.cx.isn(now, conn.local_port, addr, port)
        conn.iss = conn.snd_una = iss
        conn.snd_nxt = conn.snd_max = conn.send_buffer_seq = (iss + 1) & MASK
        conn.rtt.seq = conn.snd_nxt
        conn.rtt.time = now
        self.cx.by_tuple[conn.key] = conn
        self.cx.set_state(conn, now, S.SYN_SENT, "connect / SYN")
        snd.send_syn(self.cx, conn)
        self.cx.arm(conn, "retransmit", now + conn.rtt.rto)
        self.cx.arm(conn, "connect", now + self.cx.config.connect_timeout)
        self.cx.counters["active_opens"] += 1
        conn.sock_state = SS_CONNECTING
        raise TcpError(errno.EINPROGRESS)

    def sock_state(self, sid: int) -> str | None:
        """The BSD socket layer's SS_* state (None for an unknown socket)."""
        conn = self.cx.conns.get(sid)
        return conn.sock_state if conn is not None else None

    def accept(self, now: float, sid: int) -> tuple[int, tuple[str, int]]:
        conn = self._sock(sid)
        if conn.state is not S.LISTEN:
            raise TcpError(errno.EINVAL)
        while conn.accept_queue:
            child = self.cx.conns.get(conn.accept_queue.popleft())
            if child is None:
                continue
            child.queued = False
            child.parent = None
            child.user_open = True
            child.sock_state = SS_CONNECTED
            return child.id, (child.remote_addr, child.remote_port)
        raise TcpError(errno.EAGAIN)

    def send(self, now: float, sid: int, data: bytes, flags: int = 0) -> int:
        self.cx.now = now
        conn = self._sock(sid)
        state = conn.state
        if state is not S.ESTABLISHED and state is not S.CLOSE_WAIT:
            if conn.pending_error:
                raise TcpError(pop_error(conn))
            if state is S.SYN_SENT or state is S.SYN_RCVD:
                raise TcpError(errno.EAGAIN)
            raise TcpError(errno.EPIPE)
        if conn.pending_error or conn.snd_shutdown:
            raise TcpError(pop_error(conn) or errno.EPIPE)
        size = len(data)
        if not size:
            return 0
        buf = conn.send_buffer
        room = self._send_room(conn)
        if room <= 0:
            conn.nospace = True
            raise TcpError(errno.EAGAIN)
        if size > room:
            buf.append(memoryview(data)[:room])
            size = room
            conn.nospace = True
        else:
            buf.append(data)
        charge(self.cx, conn)
        snd.output(self.cx, conn, now)
        return size

    def send_posted(self, now: float, sid: int, data: bytes) -> None:
        """A send libsock has already returned from, within the room `send_credit`
        promised: queue all of it, past SO_SNDBUF if another thread's send took the
        room first.  If the connection can no longer send, the data is dropped, as
        Linux drops queued data when a reset arrives, and the error stays pending
        for the socket's next call."""
        self.cx.now = now
        conn = self._sock(sid)
        if not self._can_take_data(conn):
            self.cx.counters["posted_send_dropped"] += 1
            return
        conn.send_buffer.append(data)
        charge(self.cx, conn)
        snd.output(self.cx, conn, now)

    def send_credit(self, sid: int) -> int:
        """Bytes libsock may send without waiting for an answer: the send buffer's free
        room while the connection can send, else 0 (every send then asks)."""
        conn = self.cx.conns.get(sid)
        if conn is None or not self._can_take_data(conn):
            return 0
        return max(0, self._send_room(conn))

    def _send_room(self, conn: Connection) -> int:
        """What a send may queue now: the socket's send buffer's room, and past tcp.mem_max
        (for every socket's buffers) no more than makes SNDBUF_MIN (Linux's tcp_wmem[0]): a
        send then waits for its own ACKs, but each socket can go on."""
        queued = len(conn.send_buffer)
        room = conn.so_sndbuf - queued
        headroom = charge(self.cx, conn)
        if headroom < room:
            room = min(room, max(headroom, SNDBUF_MIN - queued))
        return room

    @staticmethod
    def _can_take_data(conn: Connection) -> bool:
        """A send would queue data now (no error to report first, not shut for writing)."""
        return (conn.state is S.ESTABLISHED or conn.state is S.CLOSE_WAIT) and not conn.pending_error \
            and not conn.snd_shutdown

    def recv(self, now: float, sid: int, size: int, flags: int = 0) -> bytes:
        self.cx.now = now
        conn = self._sock(sid)
        state = conn.state
        if state is S.LISTEN:
            raise TcpError(errno.ENOTCONN)
        if size < 0:
            raise TcpError(errno.EINVAL)
        if size == 0:
            return b""
        buf = conn.recv_buffer
        if buf.length:
            if flags & MSG_PEEK:
                return buf.peek(size)
            data = buf.take(size)
            charge(self.cx, conn)
            if not conn.rcvbuf_locked:
                conn.so_rcvbuf = buf.autotune(now, len(data), conn.rtt.srtt, conn.so_rcvbuf)
            if state in (S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2):     # Linux tcp_cleanup_rbuf
                if window_after_read(conn):
                    self.cx.counters["window_updates"] += 1
                    snd.send_ack(self.cx, conn)      # tell the peer the window opened
                elif delack.read_makes_due(conn, not buf.length):
                    self.cx.counters["acks_after_read"] += 1
                    snd.send_ack(self.cx, conn)
            return data
        if conn.done:
            return b""
        if conn.pending_error:
            raise TcpError(pop_error(conn))
        if conn.rcv_shutdown:
            return b""
        if state is S.CLOSED:
            raise TcpError(errno.ENOTCONN)
        if conn.ack_pending and state in (S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2):
            # the reader waits: no reply of its will carry the ACK (delack.py)
            self.cx.counters["acks_for_waiting_reader"] += 1
            snd.send_ack(self.cx, conn)
        raise TcpError(errno.EAGAIN)

    def shutdown(self, now: float, sid: int, how: int) -> None:
        self.cx.now = now
        conn = self._sock(sid)
        if how not in (SHUT_RD, SHUT_WR, SHUT_RDWR):
            raise TcpError(errno.EINVAL)
        rd = how != SHUT_WR
        wr = how != SHUT_RD
        state = conn.state
        if state is S.CLOSED or state is S.TIME_WAIT:
            conn.rcv_shutdown |= rd
            conn.snd_shutdown |= wr
            self.cx.wake(conn)
            raise TcpError(errno.ENOTCONN)
        if state is S.LISTEN:
            if rd:
                close_listener(self.cx, conn, now)
                conn.sock_state = SS_UNCONNECTED
            return
        if state is S.SYN_SENT:
            self.cx.abort(conn, now, 0, "shutdown while connecting")
            conn.sock_state = SS_UNCONNECTED
            return
        if rd:
            conn.rcv_shutdown = True
        if wr and not conn.snd_shutdown:
            conn.snd_shutdown = True
            self._send_fin(conn, now, "shutdown(SHUT_WR) / FIN")
        self.cx.wake(conn)

    def _send_fin(self, conn: Connection, now: float, cause: str) -> None:
        """tcp_close_state + tcp_send_fin: queue our FIN behind the data."""
        state = conn.state
        if state is S.ESTABLISHED or state is S.SYN_RCVD:
            self.cx.set_state(conn, now, S.FIN_WAIT_1, cause)
        elif state is S.CLOSE_WAIT:
            self.cx.set_state(conn, now, S.LAST_ACK, cause)
        else:
            return
        conn.fin_queued = True
        if state is not S.SYN_RCVD:
            snd.output(self.cx, conn, now)

    def close(self, now: float, sid: int) -> None:
        self.cx.now = now
        conn = self._sock(sid)
        conn.user_open = False
        state = conn.state
        if state is S.LISTEN:
            close_listener(self.cx, conn, now)
            return
        if state is S.CLOSED:
            self.cx.forget(conn)
            return
        if state is S.SYN_SENT:
            self.cx.set_state(conn, now, S.CLOSED, "close")
            return
        if state is S.TIME_WAIT:
            return
        linger_zero = conn.so_linger[0] and conn.so_linger[1] == 0
        unread = conn.recv_buffer.length
        if unread or linger_zero:
            # Linux tcp_close: unread data -> RST (RFC 2525 2.17); SO_LINGER 0 -> abort with RST
            self.cx.counters["abort_on_close" if unread else "abort_on_linger"] += 1
            if state not in (S.CLOSING, S.LAST_ACK) or conn.unsent > 0:
                snd.send_rst(self.cx, conn)
            conn.recv_buffer.discard()
            self.cx.abort(conn, now, 0, "close with unread data / RST" if not linger_zero else "SO_LINGER 0 / RST")
            return
        conn.rcv_shutdown = True
        if not conn.snd_shutdown:
            conn.snd_shutdown = True
            self._send_fin(conn, now, "close / FIN")
        if conn.state is S.FIN_WAIT_2:
            self.cx.arm(conn, "fin_wait_2", now + self.cx.config.fin_wait2_timeout)


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
        conn = self.cx.conns.get(sid)
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
            if conn.recv_buffer.length:
                mask |= POLLIN
            if not conn.snd_shutdown:
                if self.cx.writable(conn):
                    mask |= POLLOUT
                else:
                    conn.nospace = True
            else:
                mask |= POLLOUT
        if conn.pending_error:
            mask |= POLLERR
        return mask
