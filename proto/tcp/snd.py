"""The output path: building segments, segmentation, Nagle, SWS avoidance,
retransmission of the head, probes, resets (lwIP's tcp_out.c, gVisor's snd.go).

Functions take the connection's context (`cx`, context.py) for its effects, counters and config.
"""
from __future__ import annotations

from proto.tcp import rack, scoreboard, seqnum
from proto.tcp.connection import Connection
from proto.tcp.context import Context
from proto.tcp.delack import ack_sent, data_sent
from proto.tcp.rcvbuf import charge, select_window, syn_window
from proto.tcp.state import SENDING, Recovery, State
from proto.wire.tcp import FLAGS_BY_VALUE, NO_OPTIONS, TcpOptions, TcpSegment

# Flags as plain ints on the hot path (enum.IntFlag arithmetic is slow); segments carry TcpFlags.
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
ACK_PSH = ACK | PSH
ACK_FIN = ACK | FIN
ACK_PSH_FIN = ACK | PSH | FIN
SYN_ACK = SYN | ACK
RST_ACK = RST | ACK
MASK = seqnum.MASK
TS_OPTION_LEN = 12          # NOP, NOP, kind 8, length 10: what a timestamp takes of each segment


def our_mss(cx: Context, conn: Connection) -> int:
    """The MSS we announce (config.mss, or TCP_MAXSEG if smaller)."""
    mss = cx.config.mss
    if conn.tcp_maxseg and conn.tcp_maxseg < mss:
        mss = conn.tcp_maxseg
    return mss


# ---------------------------------------------------------------- sending
def emit(cx: Context, conn: Connection, flags: int, seq: int, payload: bytes = b"",
         options: TcpOptions = NO_OPTIONS) -> None:
    """Send one segment of this connection with the current ACK and window."""
    if flags & SYN:
        window = syn_window(conn)
    else:
        window = select_window(conn, charge(cx, conn))
    if flags & ACK:
        ack = conn.rcv_nxt
        conn.ack_pending = False
        conn.ack_now = False
        conn.acked_upto = ack
        ack_sent(conn)
        if conn.timers["delayed_ack"] is not None:
            cx.cancel(conn, "delayed_ack")
        if conn.ts_ok:
            if not flags & (SYN | RST):            # RFC 7323 3.2: on every segment but a reset
                blocks = conn.recv_buffer.sack_blocks()[:3] if conn.recv_buffer.ooo and conn.sack_ok \
                    and not payload else ()        # (3 blocks fit beside a timestamp)
                options = TcpOptions(timestamps=(cx.tsval(conn), conn.ts_recent), sack_blocks=blocks)
        elif conn.recv_buffer.ooo and conn.sack_ok and not payload and options is NO_OPTIONS:
            options = TcpOptions(sack_blocks=conn.recv_buffer.sack_blocks())
    else:
        ack = 0
    seg = TcpSegment(conn.local_port, conn.remote_port, seq & MASK, ack, FLAGS_BY_VALUE[flags], window, 0,
                     options, payload)
    cx.effects.segments.append((conn.local_addr, conn.remote_addr, seg))
    cx.counters["out_segs"] += 1
    if flags & RST:
        cx.counters["out_rsts"] += 1


def acceptable_seq(conn: Connection) -> int:
    """The sequence number of a segment without data (as Linux tcp_acceptable_seq): the highest
    sent (snd_max), not snd_nxt: after a retransmission timeout snd_nxt moves back (go-back-N),
    and a number the peer has already passed would be unacceptable to it.  But never beyond
    the right edge of the window the peer offers (SND.UNA + SND.WND): when the peer's buffer
    is full it offers less than we have in flight (zero), and Linux (6.17+) drops a segment
    ending past that edge as beyond the window (TcpExtBeyondWindow) without reading its ACK
    or window, so neither side would ever learn that the other has moved."""
    snd_max = conn.snd_max
    edge = (conn.snd_una + conn.snd_wnd) & MASK
    return snd_max if seqnum.le(snd_max, edge) else edge


def send_ack(cx: Context, conn: Connection) -> None:
    """A pure ACK, numbered as acceptable_seq says."""
    emit(cx, conn, ACK, acceptable_seq(conn))


def send_rst(cx: Context, conn: Connection) -> None:
    """An active reset from a synchronised connection (close with unread data, linger 0, abort)."""
    emit(cx, conn, RST_ACK, acceptable_seq(conn))


def syn_options(cx: Context, conn: Connection, reply_to_wscale: bool) -> TcpOptions:
    active = conn.state is State.SYN_SENT
    timestamps = None
    if cx.config.timestamps and (active or conn.ts_ok):            # offered, or offered to us
        if conn.ts_offset is None:
            conn.ts_offset = cx.ts_offset(conn)
        timestamps = (cx.tsval(conn), 0 if active else conn.ts_recent)
    return TcpOptions(mss=our_mss(cx, conn), window_scale=conn.rcv_wscale if reply_to_wscale else None,
                      sack_permitted=active or conn.sack_ok, timestamps=timestamps)


def send_syn(cx: Context, conn: Connection) -> None:
    """SYN (SYN_SENT) or SYN+ACK (SYN_RCVD), first transmission or retransmission."""
    if conn.state is State.SYN_SENT:
        emit(cx, conn, SYN, conn.iss, options=syn_options(cx, conn, True))
    else:
        emit(cx, conn, SYN_ACK, conn.iss, options=syn_options(cx, conn, conn.wscale_ok))


def send_probe(cx: Context, conn: Connection) -> None:
    """Zero-window / keepalive probe: an ACK with SEG.SEQ = SND.UNA - 1 and no data (Linux tcp_xmit_probe_skb).

    Its sequence number is already acknowledged, so the peer must answer with an ACK.
    """
    emit(cx, conn, ACK, (conn.snd_una - 1) & MASK)


def send_range(cx: Context, conn: Connection, now: float, seq: int, size: int) -> int:
    """Send up to `size` data bytes of the send buffer starting at `seq` (plus our FIN if it
    follows them). Returns the sequence space used.  Does not move snd_nxt."""
    buf = conn.send_buffer
    offset = (seq - conn.send_buffer_seq) & MASK
    end = offset + size
    if end > len(buf):
        end = len(buf)
    payload = buf.slice(offset, end)            # a view of the queued chunk when it lies in one
    used = end - offset
    if end == len(buf):
        if conn.fin_queued:
            flags = ACK_PSH_FIN if used else ACK_FIN
            used += 1
        else:
            flags = ACK_PSH
    else:
        flags = ACK
    if used == 0:
        return 0
    again = seqnum.lt(seq, conn.snd_max)
    if again:
        cx.counters["retrans_segs"] += 1
        conn.total_retransmits += 1
    elif payload:
        data_sent(conn, now)
    emit(cx, conn, flags, seq, payload)
    if conn.rack is not None:
        rack.on_sent(conn.rack, seq, (seq + used) & MASK, now, again)
    return used


def output(cx: Context, conn: Connection, now: float, force: bool = False) -> None:
    """Send what the windows, Nagle and SWS avoidance allow (tcp_write_xmit).

    `force` (persist timer as the SWS override) sends one segment that fits
    the offered window even if it is small.
    """
    if conn.state not in SENDING:
        return
    buf = conn.send_buffer
    mss = conn.send_mss
    # TSO: a full-sized segment may be a super-segment of whole MSS-sized pieces, which the
    # device cuts apart (only at our own MSS, the size the device cuts at)
    chunk = mss
    gso = cx.config.gso_max_size
    if gso > mss and mss + (TS_OPTION_LEN if conn.ts_ok else 0) == cx.config.mss:
        chunk = gso - gso % mss
    while True:
        snd_nxt = conn.snd_nxt
        offset = (snd_nxt - conn.send_buffer_seq) & MASK
        available = len(buf) - offset
        if available < 0:
            break                                   # only our FIN is beyond snd_nxt... already sent
        limit = None
        if conn.scoreboard and snd_nxt != conn.snd_max:
            # go-back-N after an RTO skips what the peer has SACKed (RFC 6675 5.1)
            snd_nxt, limit = scoreboard.skip_sacked(conn, snd_nxt)
            conn.snd_nxt = snd_nxt
            offset = (snd_nxt - conn.send_buffer_seq) & MASK
            available = len(buf) - offset
            if available < 0:
                break
        in_flight = (snd_nxt - conn.snd_una) & MASK
        pipe = in_flight                            # what congestion control counts
        if conn.recovery is Recovery.LOSS and conn.scoreboard:
            pipe -= scoreboard.sacked_below(conn, snd_nxt)
        # the peer's window ends at SND.UNA + SND.WND whatever it has SACKed; cwnd limits the pipe
        usable = conn.snd_wnd - in_flight
        if conn.cwnd - pipe < usable:
            usable = conn.cwnd - pipe
        if available > 0:
            size = chunk if chunk < available else available
            if usable < size:
                size = usable
                if size > mss:
                    size -= size % mss          # a super-segment cut by the window ends on an MSS boundary
            if limit is not None and size > limit:
                size = limit                    # up to the next SACKed range: a retransmission, sent as is
                force = True
            if size <= 0:
                break
            if size < mss and not force:
                if size == available:
                    # Nagle (RFC 896, RFC 1122 4.2.3.4) in Minshall's form, as Linux: a small final
                    # segment waits while an earlier small segment is unacknowledged, unless
                    # TCP_NODELAY or it carries our FIN.
                    if (in_flight and not conn.tcp_nodelay and not conn.fin_queued
                            and 0 < ((conn.snd_sml - conn.snd_una) & MASK) < seqnum.HALF):
                        break
                elif size * 2 < conn.max_snd_wnd:
                    break                           # sender SWS avoidance: wait for a useful window
            used = send_range(cx, conn, now, snd_nxt, size)
            if size < mss:
                conn.snd_sml = (snd_nxt + size) & MASK
            force = False
        elif conn.fin_queued and available == 0:
            used = send_range(cx, conn, now, snd_nxt, 0)   # FIN alone
        else:
            break
        if used == 0:
            break
        new_nxt = (snd_nxt + used) & MASK
        if seqnum.ge(snd_nxt, conn.snd_max):
            if conn.rtt.seq is None:
                conn.rtt.seq = new_nxt
                conn.rtt.time = now
            conn.snd_max = new_nxt
        elif seqnum.gt(new_nxt, conn.snd_max):
            conn.snd_max = new_nxt
        conn.snd_nxt = new_nxt
    timers = conn.timers
    if conn.snd_una != conn.snd_max:
        if timers["retransmit"] is None:
            arm_retransmit(cx, conn, now)
        if timers["persist"] is not None:
            cx.cancel(conn, "persist")
    elif conn.unsent > 0 and timers["persist"] is None and timers["retransmit"] is None:
        # Nothing in flight, data waiting for the window: the persist timer probes
        # a zero window, and also serves as the SWS-avoidance override.
        cx.arm(conn, "persist", now + persist_interval(cx, conn))


def send_new(cx: Context, conn: Connection, now: float, limit: int) -> int:
    """RFC 6675 NextSeg rule 2: one segment of new data (up to `limit` bytes) if the peer's window
    allows; not a small one the window cuts.  Returns the sequence space used."""
    seq = conn.snd_max
    if conn.snd_nxt != seq:
        return 0
    offset = (seq - conn.send_buffer_seq) & MASK
    available = len(conn.send_buffer) - offset
    if available <= 0:
        return 0
    room = conn.snd_wnd - ((seq - conn.snd_una) & MASK)
    size = min(limit, available, room)
    if size <= 0 or (size < limit and size < available):
        return 0
    used = send_range(cx, conn, now, seq, size)
    if used:
        end = (seq + used) & MASK
        if conn.rtt.seq is None:
            conn.rtt.seq = end
            conn.rtt.time = now
        conn.snd_max = conn.snd_nxt = end
    return used


TLP_MIN = 0.01          # Linux: a probe timeout of at least 10 ms


def arm_retransmit(cx: Context, conn: Connection, now: float) -> None:
    """Arm the retransmission timer; with SACK, for the tail loss probe (RFC 8985 7.2, PTO =
    2 * SRTT) when that comes first: a probe makes the peer report the tail of the flight (a lost
    last ACK or last segments) instead of the sender waiting for the RTO.  Only for a flight of
    more than one segment, out of recovery."""
    rto = conn.rtt.rto
    if (conn.sack_ok and conn.rtt.srtt is not None and conn.recovery is Recovery.OPEN
            and ((conn.snd_max - conn.snd_una) & MASK) > conn.send_mss):
        pto = 2 * conn.rtt.srtt
        if pto < TLP_MIN:
            pto = TLP_MIN
        if pto < rto:
            conn.pto_armed = True
            conn.reo_armed = False
            cx.arm(conn, "retransmit", now + pto)
            return
    conn.pto_armed = conn.reo_armed = False
    cx.arm(conn, "retransmit", now + rto)


def persist_interval(cx: Context, conn: Connection) -> float:
    base = conn.rtt.rto * (1 << min(conn.persist_backoff, 16))
    cfg = cx.config
    return min(max(base, cfg.rto_min), cfg.rto_max)


def retransmit_head(cx: Context, conn: Connection, now: float) -> None:
    """Resend the first unacknowledged segment (RTO or fast retransmit)."""
    if conn.state is State.SYN_SENT or conn.state is State.SYN_RCVD:
        send_syn(cx, conn)
        cx.counters["retrans_segs"] += 1
        conn.total_retransmits += 1
        return
    outstanding = (conn.snd_max - conn.snd_una) & MASK
    if outstanding == 0:
        return
    size = conn.send_mss if conn.send_mss < outstanding else outstanding
    if 0 < conn.snd_wnd < size:
        # Linux tcp_retransmit_skb: no more than the window offered (a 1460-byte segment into a
        # 1024-byte window is dropped whole by Linux as beyond the window, however often resent)
        size = conn.snd_wnd
    used = send_range(cx, conn, now, conn.snd_una, size)
    end = (conn.snd_una + used) & MASK
    if seqnum.lt(conn.snd_nxt, end):
        conn.snd_nxt = end
    conn.rtt.seq = None                      # Karn: never time a retransmitted segment
