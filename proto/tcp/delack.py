"""When to acknowledge: quick ACKs, the adaptive delayed-ACK timeout, interactive (pingpong)
connections, and the ACK a read makes due (RFC 1122 4.2.3.2, RFC 5681 4.2; Linux's icsk_ack
and tcp_input.c: tcp_event_data_recv, __tcp_ack_snd_check, tcp_send_delayed_ack,
tcp_cleanup_rbuf, tcp_incr_quickack).

- Quick-ACK mode: at the start of a connection and after an idle gap longer than the RTO,
  the next segments are ACKed at once (as many as half the window holds in full segments,
  at most 16), so the sender's slow start is not held back by our delays.
- The delayed-ACK timeout (ato) follows the inter-arrival time of data, from 40 ms
  (TCP_ATO_MIN) up, bounded by the RTO and by the smoothed RTT, and never above
  tcp.delayed_ack (200 ms by default: RFC 1122's bound is 500 ms).
- A connection that sends data soon after data arrived is interactive (pingpong): its
  ACKs wait for the reply to carry them; a delayed ACK that fires ends it.
- A read (tcp_cleanup_rbuf) acknowledges at once what is pending when more than a full
  segment is unacknowledged, or when the read drained a queue that a short (pushed)
  segment ended on a connection that is not interactive.
- Beyond Linux: a reader that finds nothing to read and waits (a recv that would block)
  is not about to send a reply that could carry the ACK, so a pending ACK goes at once:
  a peer whose Nagle holds its next small segment until this ACK is released a round
  trip earlier instead of a delayed-ACK timeout later.
"""
from __future__ import annotations

from dataclasses import dataclass

ATO_MIN = 0.040            # TCP_ATO_MIN = TCP_DELACK_MIN
MAX_QUICKACKS = 16         # TCP_MAX_QUICKACKS
PUSHED, PUSHED2 = 1, 2     # ICSK_ACK_PUSHED: a short segment arrived since our last ACK; PUSHED2: twice


@dataclass(slots=True)
class AckState:
    quick: int = 0              # ACKs still to be sent at once (quick-ACK mode)
    pingpong: bool = False      # interactive: ACKs wait for a reply to carry them
    ato: float = 0.0            # the delayed-ACK timeout (0: no data has arrived yet)
    lrcvtime: float = 0.0       # when data last arrived
    pushed: int = 0             # PUSHED / PUSHED2 since our last ACK


def incr_quickack(conn, limit: int) -> None:
    """tcp_incr_quickack: ACK the next segments at once, as many as half the window holds
    (at least 2, at most `limit`: tcp.quickacks; 0 turns quick ACKs off, as in Linux 2.0)."""
    if limit <= 0:
        return
    quickacks = conn.rcv_wnd // (2 * conn.rcv_mss) if conn.rcv_mss else 0
    quickacks = min(max(2, quickacks), limit)
    if quickacks > conn.acks.quick:
        conn.acks.quick = quickacks


def data_received(conn, now: float, plen: int, quickacks: int = MAX_QUICKACKS) -> None:
    """tcp_event_data_recv and tcp_measure_rcv_mss: adapt ato to the inter-arrival time."""
    a = conn.acks
    if plen < conn.rcv_mss:
        a.pushed = PUSHED2 if a.pushed else PUSHED
    if not a.ato:
        incr_quickack(conn, quickacks)
        a.ato = ATO_MIN
    else:
        gap = now - a.lrcvtime
        rto = conn.rtt.rto
        if gap <= ATO_MIN / 2:
            a.ato = a.ato / 2 + ATO_MIN / 2
        elif gap < a.ato:
            a.ato = a.ato / 2 + gap
            if a.ato > rto:
                a.ato = rto
        elif gap > rto:
            incr_quickack(conn, quickacks)      # a long gap: the sender restarts from a small window
    a.lrcvtime = now


def ack_at_once(conn) -> bool:
    """In quick-ACK mode (and not interactive)."""
    a = conn.acks
    return a.quick > 0 and not a.pingpong


def delay(conn, delack_max: float) -> float:
    """tcp_send_delayed_ack: how long a pending ACK may wait."""
    a = conn.acks
    ato = a.ato or ATO_MIN
    if ato > ATO_MIN:
        limit = delack_max
        srtt = conn.rtt.srtt
        if srtt is not None:
            rtt = srtt if srtt > ATO_MIN else ATO_MIN
            if rtt < limit:
                limit = rtt
        if ato > limit:
            ato = limit
    return ato if ato < delack_max else delack_max


def ack_sent(conn) -> None:
    """tcp_dec_quickack_mode, and nothing is pushed any more."""
    a = conn.acks
    if a.quick:
        a.quick -= 1
    a.pushed = 0


def data_sent(conn, now: float) -> None:
    """tcp_event_data_sent: data going out soon after data came in makes the connection
    interactive."""
    a = conn.acks
    if a.ato and now - a.lrcvtime < a.ato:
        a.pingpong = True


def delayed_ack_fired(conn) -> None:
    """tcp_delack_timer_handler: a delayed ACK that had to fire means no reply carried it:
    an interactive connection stops being one; otherwise the timeout was too short."""
    a = conn.acks
    if a.pingpong:
        a.pingpong = False
        a.ato = ATO_MIN
    else:
        a.ato = min(2 * (a.ato or ATO_MIN), conn.rtt.rto)


def read_makes_due(conn, drained: bool) -> bool:
    """tcp_cleanup_rbuf: should the ACK pending go now that the application has read?"""
    if not conn.ack_pending:
        return False
    a = conn.acks
    if ((conn.rcv_nxt - conn.acked_upto) & 0xFFFFFFFF) > conn.rcv_mss:
        return True
    return drained and (a.pushed == PUSHED2 or (a.pushed and not a.pingpong))


def set_quickack(conn, on: bool) -> bool:
    """TCP_QUICKACK: on leaves interactive mode (True: a pending ACK should go now); off enters it."""
    a = conn.acks
    if not on:
        a.pingpong = True
        return False
    a.pingpong = False
    return conn.ack_pending
