"""SACK-based loss recovery for our sender (RFC 6675 5, conservative SACK loss recovery),
and the tail loss probe (RFC 8985 7).  The scoreboard it reads is scoreboard.py.
"""
from __future__ import annotations

from proto.tcp import snd
from proto.tcp.connection import Connection
from proto.tcp.context import Context
from proto.tcp.scoreboard import HALF, MASK, holes, next_seg, pipe, rule3


def enter_recovery(cx: Context, conn: Connection, now: float) -> None:
    """RFC 6675 5 step (4): RecoveryPoint = HighData, cwnd = ssthresh = FlightSize / 2,
    retransmit the first segment, then send what the pipe allows."""
    mss = conn.send_mss
    flight = (conn.snd_max - conn.snd_una) & MASK
    conn.ssthresh = max(flight // 2, 2 * mss)
    conn.cwnd = conn.ssthresh
    conn.recover = conn.snd_max
    conn.in_recovery = True
    conn.high_rxt = conn.snd_una
    conn.rxt_marks.clear()
    if conn.pto_armed:                                 # the probe timer becomes the RTO again
        conn.pto_armed = False
        cx.arm(conn, "retransmit", now + conn.rto)
    cx.counters["fast_retransmits"] += 1
    cx.count("sack_recoveries")
    retransmit(cx, conn, now, 0, min(mss, flight))
    transmit(cx, conn, now)


def retransmit(cx: Context, conn: Connection, now: float, off: int, size: int) -> int:
    seq = (conn.snd_una + off) & MASK
    used = snd.send_range(cx, conn, now, seq, size)
    if used:
        end = (seq + used) & MASK
        if ((end - conn.high_rxt) & MASK) < HALF:
            conn.high_rxt = end
        conn.rtt_seq = None                            # Karn
        marks = conn.rxt_marks
        if len(marks) > 256:
            marks.clear()
        marks[seq] = conn.snd_max                      # for detecting a lost retransmission
        cx.count("sack_retransmits")
    return used


def transmit(cx: Context, conn: Connection, now: float) -> None:
    """RFC 6675 5 step (C): while cwnd - pipe >= 1 SMSS, send NextSeg."""
    mss = conn.send_mss
    una = conn.snd_una
    mark = conn.rxt_marks.get(una)
    if mark is not None and conn.scoreboard and 0 < ((conn.scoreboard[-1][1] - mark) & MASK) < HALF:
        # Data sent after the head's retransmission has been SACKed, the head is still missing:
        # that retransmission was lost too (Linux tcp_mark_lost_retrans): send it again now
        # rather than wait for the RTO.
        cx.count("sack_lost_retransmits")
        retransmit(cx, conn, now, 0, min(mss, (conn.snd_max - una) & MASK))
    for _ in range(1000):
        hs = holes(conn)
        room = conn.cwnd - pipe(conn, hs)
        if room < mss:
            return
        nxt = next_seg(conn, hs)                       # rule 1
        if nxt is not None:
            if not retransmit(cx, conn, now, *nxt):
                return
            continue
        if snd.send_new(cx, conn, now, mss):          # rule 2
            continue
        nxt = rule3(conn, hs)                          # rule 3
        if nxt is None or not retransmit(cx, conn, now, *nxt):
            return


def tail_loss_probe(cx: Context, conn: Connection, now: float) -> None:
    """The probe timer went off (RFC 8985 7.3): one new segment if the peer's window allows,
    else the last segment again; then the RTO runs."""
    mss = conn.send_mss
    cx.count("tlp_probes")
    if not snd.send_new(cx, conn, now, mss):
        start = conn.snd_max
        flight = (start - conn.snd_una) & MASK
        start = (start - (mss if mss < flight else flight)) & MASK
        snd.send_range(cx, conn, now, start, (conn.snd_max - start) & MASK)
        conn.rtt_seq = None
    conn.pto_armed = False
    cx.arm(conn, "retransmit", now + conn.rto)


def limited_transmit(cx: Context, conn: Connection, now: float) -> None:
    """RFC 6675 5 step (3): before recovery, new data as cwnd - pipe allows (Limited Transmit
    measured by the scoreboard: a SACKed segment has left the network)."""
    mss = conn.send_mss
    for _ in range(1000):
        if conn.cwnd - pipe(conn) < mss or not snd.send_new(cx, conn, now, mss):
            return


