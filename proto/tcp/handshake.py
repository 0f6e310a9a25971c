"""The handshake's shared steps: the peer's SYN recorded, the window a SYN offers, ESTABLISHED
entered (tcp_rcv_synsent_state_process and tcp_conn_request's common parts).

Used by the input path (rcv.py: SYN_SENT, simultaneous open) and the listener (listener.py).
"""
from __future__ import annotations

from proto.tcp import seqnum, snd
from proto.tcp.congestion import INITIAL_SSTHRESH
from proto.tcp.connection import Connection
from proto.tcp.context import Context
from proto.tcp.rack import RackState
from proto.tcp.state import State
from proto.wire.tcp import TcpSegment

S = State
MASK = seqnum.MASK
MIN_SEND_MSS = 48        # Linux tcp_min_snd_mss


def take_syn_options(cx: Context, conn: Connection, seg: TcpSegment) -> None:
    """Record the peer's SYN: IRS, MSS (RFC 9293 3.7.1; 536 when absent), window scale (RFC 7323)."""
    o = seg.options
    ours = snd.our_mss(cx, conn)
    peer_mss = o.mss if o.mss else 536
    conn.peer_mss = peer_mss
    conn.send_mss = min(max(peer_mss, MIN_SEND_MSS), ours)
    conn.rcv_mss = min(536, ours)
    conn.sack_ok = o.sack_permitted
    conn.rack = RackState() if conn.sack_ok and cx.config.rack else None
    conn.ts_ok = bool(cx.config.timestamps) and o.timestamps is not None
    if conn.ts_ok:                                  # RFC 7323 3.2: each segment carries 12 bytes more
        conn.ts_recent = o.timestamps[0]
        conn.send_mss = max(conn.send_mss - snd.TS_OPTION_LEN, MIN_SEND_MSS)
    if o.window_scale is not None:
        conn.wscale_ok = True
        conn.snd_wscale = min(o.window_scale, 14)
    else:
        conn.wscale_ok = False
        conn.snd_wscale = 0
        conn.rcv_wscale = 0
    conn.irs = seg.seq
    conn.rcv_nxt = (seg.seq + 1) & MASK
    conn.acked_upto = conn.rcv_nxt


def enter_established(cx: Context, conn: Connection, now: float, cause: str) -> None:
    cfg = cx.config
    cx.set_state(conn, now, S.ESTABLISHED, cause)
    conn.cwnd = cfg.initial_cwnd_segments * conn.send_mss
    conn.ssthresh = INITIAL_SSTHRESH
    conn.retransmits = 0
    conn.last_recv = now
    cx.cancel(conn, "connect")           # lazily: TIME_WAIT's message (or one stale fire) ends it
    if conn.rtt.srtt is None:
        conn.rtt.rto = cfg.rto_initial
    if conn.so_keepalive:
        cx.arm(conn, "keepalive", now + cx.keepalive_idle(conn))
