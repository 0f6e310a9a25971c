"""Socket options: setsockopt and getsockopt at SOL_SOCKET and IPPROTO_TCP, with Linux's
names, values, limits and errors (sock_setsockopt, do_tcp_setsockopt).

`SocketOptions` is a part of the engine (mixed into TcpEngine), on `self.cx`.
"""
from __future__ import annotations

import errno
import struct

from proto.tcp import delack, snd
from proto.tcp.congestion import CONTROLS
from proto.tcp.congestion import make as make_congestion_control
from proto.tcp.context import Context
from proto.tcp.sockets import TcpError, pop_error
from proto.tcp.state import State

S = State
# socket option names (Linux values)
SOL_SOCKET, IPPROTO_TCP, IPPROTO_IP = 1, 6, 0
SO_REUSEADDR, SO_TYPE, SO_ERROR, SO_SNDBUF, SO_RCVBUF, SO_KEEPALIVE, SO_LINGER, SO_ACCEPTCONN = 2, 3, 4, 7, 8, 9, 13, 30
TCP_NODELAY, TCP_MAXSEG, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_QUICKACK, TCP_CONGESTION = 1, 2, 4, 5, 6, 12, 13
TCP_CA_NAME_MAX = 16
# Linux's limits for buffer sizes (net.core.[rw]mem_max, SOCK_MIN_[RS]NDBUF)
RMEM_MAX = WMEM_MAX = 212992
SOCK_MIN_RCVBUF, SOCK_MIN_SNDBUF = 2304, 4608
TCP_MIN_MSS, MAX_TCP_WINDOW = 88, 32767
MAX_TCP_KEEPIDLE = MAX_TCP_KEEPINTVL = 32767
MAX_TCP_KEEPCNT = 127


class SocketOptions:
    cx: Context

    def setsockopt(self, now: float, sid: int, level: int, name: int, value) -> None:
        self.cx.now = now
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
                    self.cx.arm(conn, "keepalive", conn.last_recv + self.cx.keepalive_idle(conn))
                conn.so_keepalive = on
                if not on:
                    self.cx.cancel(conn, "keepalive")
            elif name == SO_SNDBUF:
                conn.so_sndbuf = max(2 * min(val, WMEM_MAX), SOCK_MIN_SNDBUF)
                conn.sndbuf_locked = True
                if conn.nospace and self.cx.writable(conn):
                    self.cx.wake(conn)
            else:
                conn.so_rcvbuf = max(2 * min(val, RMEM_MAX), SOCK_MIN_RCVBUF)
                conn.rcvbuf_locked = True
            return
        if level == IPPROTO_TCP and name == TCP_CONGESTION:
            self._set_congestion(conn, value)
            return
        if level == IPPROTO_TCP:
            if name not in (TCP_NODELAY, TCP_MAXSEG, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_QUICKACK):
                raise TcpError(errno.ENOPROTOOPT)
            val = self._int_value(value)
            if name == TCP_QUICKACK:
                if delack.set_quickack(conn, bool(val)) and conn.state in (S.ESTABLISHED, S.CLOSE_WAIT):
                    snd.send_ack(self.cx, conn)
            elif name == TCP_NODELAY:
                conn.tcp_nodelay = bool(val)
                if val and conn.send_buffer:
                    snd.output(self.cx, conn, now)      # Linux pushes pending frames
            elif name == TCP_MAXSEG:
                if val and not TCP_MIN_MSS <= val <= MAX_TCP_WINDOW:
                    raise TcpError(errno.EINVAL)
                conn.tcp_maxseg = val
            elif name == TCP_KEEPIDLE:
                if not 1 <= val <= MAX_TCP_KEEPIDLE:
                    raise TcpError(errno.EINVAL)
                conn.tcp_keepidle = float(val)
                if conn.so_keepalive and conn.timers["keepalive"] is not None:
                    self.cx.arm(conn, "keepalive", conn.last_recv + conn.tcp_keepidle)
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
    def _set_congestion(conn, value) -> None:
        """TCP_CONGESTION: a name (bytes, up to a NUL); ENOENT for one not built in, as Linux."""
        if not isinstance(value, (bytes, bytearray, str)):
            raise TcpError(errno.EINVAL)
        name = value.encode() if isinstance(value, str) else bytes(value)
        name = name.split(b"\0", 1)[0][:TCP_CA_NAME_MAX].decode("ascii", "replace")
        if name not in CONTROLS:
            raise TcpError(errno.ENOENT)
        if name != conn.cc.name:
            conn.cc = make_congestion_control(name)

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
        cfg = self.cx.config
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
                return pop_error(conn)
            if name == SO_TYPE:
                return 1
            if name == SO_ACCEPTCONN:
                return int(conn.state is S.LISTEN)
            raise TcpError(errno.ENOPROTOOPT)
        if level == IPPROTO_TCP:
            if name == TCP_NODELAY:
                return int(conn.tcp_nodelay)
            if name == TCP_CONGESTION:
                return conn.cc.name.encode()
            if name == TCP_QUICKACK:
                return int(not conn.acks.pingpong)
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
