"""The input path: tcp_rcv's steps for a connection that exists (RFC 9293 3.10.7,
RFC 5961), in the seed's order: SYN_SENT; then acceptability, RST, SYN, ACK,
URG (ignored), data, FIN.  LISTEN is in listener.py.
"""
from __future__ import annotations

import errno

from proto.tcp import delack, recovery, scoreboard, seqnum, snd
from proto.tcp.connection import SNDBUF_AUTOTUNE_MAX, Connection
from proto.tcp.context import Context
from proto.tcp.handshake import enter_established, take_syn_options
from proto.tcp.rcvbuf import charge, syn_window
from proto.tcp.listener import child_established, listen_arrives
from proto.tcp.state import Recovery, State
from proto.wire.tcp import TcpSegment

S = State
OPEN, FAST = Recovery.OPEN, Recovery.FAST
FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10      # plain ints: see snd.py
SYN_FIN_RST = SYN | FIN | RST
MASK = seqnum.MASK
HALF = seqnum.HALF


# ---------------------------------------------------------------- SYN_SENT
def syn_sent_arrives(cx: Context, conn: Connection, now: float, seg: TcpSegment) -> None:
    flags = int(seg.flags)
    if flags & ACK:
        if seqnum.le(seg.ack, conn.iss) or seqnum.gt(seg.ack, conn.snd_max):
            cx.count("drop_syn_sent_bad_ack")
            if not flags & RST:
                cx.reply_reset(conn.local_addr, conn.remote_addr, seg)
            return
    if flags & RST:
        if flags & ACK:
            cx.abort(conn, now, errno.ECONNREFUSED, "RST (connection refused)")
        else:
            cx.count("drop_syn_sent_rst_no_ack")
        return
    if not flags & SYN:
        cx.count("drop_syn_sent_no_syn")
        return
    take_syn_options(cx, conn, seg)
    conn.rcv_adv = (conn.rcv_nxt + syn_window(conn)) & MASK
    conn.snd_wnd = seg.window                 # never scaled in a SYN
    conn.max_snd_wnd = seg.window
    conn.snd_wl1 = seg.seq
    conn.last_recv = now
    if flags & ACK:
        ack = seg.ack
        conn.snd_una = ack
        conn.snd_wl2 = ack
        if conn.rtt.seq is not None and seqnum.ge(ack, conn.rtt.seq):
            conn.rtt.sample(now - conn.rtt.time, cx.config.rto_min, cx.config.rto_max)
        conn.rtt.seq = None
        enter_established(cx, conn, now, "SYN+ACK / ACK")
        cx.cancel(conn, "retransmit")
        snd.send_ack(cx, conn)
        cx.wake(conn)
        snd.output(cx, conn, now)
    else:
        conn.snd_wl2 = conn.iss
        cx.set_state(conn, now, S.SYN_RCVD, "SYN (simultaneous open) / SYN+ACK")
        snd.send_syn(cx, conn)


# ---------------------------------------------------------------- TIME_WAIT (Linux tcp_timewait_state_process)
def time_wait_arrives(cx: Context, conn: Connection, now: float, src: str, dst: str, seg: TcpSegment) -> None:
    flags = int(seg.flags)
    seq = seg.seq
    if flags & RST:
        if seq == conn.rcv_nxt:
            cx.set_state(conn, now, S.CLOSED, "RST in TIME_WAIT")
        else:
            cx.count("drop_time_wait_rst")
        return
    if flags & SYN and not flags & ACK and seqnum.gt(seq, conn.rcv_nxt):
        listener = cx.listeners.get(conn.local_port)
        if listener is not None:
            # A new incarnation of the connection (RFC 1122 4.2.2.13): its ISN goes beyond the old one.
            isn = (conn.snd_nxt + 65535 + 2) & MASK
            cx.set_state(conn, now, S.CLOSED, "SYN reuses TIME_WAIT")
            cx.count("time_wait_recycled")
            listen_arrives(cx, listener, now, src, dst, seg, isn=isn)
            return
    if flags & ACK and not seg.payload and not flags & (SYN | FIN) and seq == conn.rcv_nxt:
        return                                      # a bare in-window ACK: nothing to do
    # A retransmitted FIN (our ACK was lost), old data, a stray SYN: ACK it; 2MSL starts again.
    if flags & FIN or flags & ACK:
        cx.arm(conn, "time_wait", now + 2 * cx.config.msl)
    cx.count("time_wait_acks")
    snd.send_ack(cx, conn)


# ---------------------------------------------------------------- the synchronised states
def challenge_ack(cx: Context, conn: Connection, now: float) -> None:
    """RFC 5961 challenge ACK, rate-limited like Linux's tcp_challenge_ack_limit."""
    if cx.challenge_allowed(now):
        cx.counters["challenge_acks"] += 1
        snd.send_ack(cx, conn)
    else:
        cx.count("challenge_acks_limited")


def segment_arrives(cx: Context, conn: Connection, now: float, seg: TcpSegment) -> None:
    """A segment for a connection in SYN_SENT, SYN_RCVD or a synchronised state other than TIME_WAIT."""
    state = conn.state
    if state is S.SYN_SENT:
        syn_sent_arrives(cx, conn, now, seg)
        return
    flags = int(seg.flags)
    seq = seg.seq
    payload = seg.payload
    plen = len(payload)
    rcv_nxt = conn.rcv_nxt
    ts = seg.options.timestamps if conn.ts_ok else None

    # --- RFC 7323 5.3 R1, PAWS: a timestamp older than TS.Recent is an old duplicate
    if ts is not None and ((ts[0] - conn.ts_recent) & MASK) >= HALF and not flags & RST:
        cx.count("drop_paws")
        snd.send_ack(cx, conn)
        return

    # --- fast path (header prediction): in-order data or a pure ACK in ESTABLISHED
    if (state is S.ESTABLISHED and seq == rcv_nxt and (flags & SYN_FIN_RST) == 0 and flags & ACK
            and not conn.recv_buffer.ooo and conn.fin_seq is None and conn.recovery is not FAST
            and conn.dupacks == 0):
        ack = seg.ack
        if ((ack - conn.snd_una) & MASK) <= ((conn.snd_max - conn.snd_una) & MASK):
            conn.last_recv = now
            conn.probes_out = 0
            if ts is not None and seqnum.le(seq, conn.acked_upto):
                conn.ts_recent = ts[0]                 # R3: the TSval to echo
            process_ack(cx, conn, now, seg, ack, plen)
            if plen:
                if plen > conn.rcv_wnd or plen > cx.config.mem_max - cx.mem_held:     # (tcp.mem_max)
                    receive_data(cx, conn, now, seq, payload)
                else:
                    _append_in_order(cx, conn, now, payload, plen)
                    charge(cx, conn)
            respond(cx, conn, now)
            return

    seg_len = plen + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)

    # --- RFC 5961 4.2 / Linux: the crossed SYN+ACK of a simultaneous open passes as an ACK;
    #     a retransmitted SYN in a passive SYN_RCVD is answered with the SYN+ACK again.
    if flags & SYN and state is S.SYN_RCVD and seq == conn.irs and not flags & RST:
        if flags & ACK and seg.ack == conn.snd_max and conn.active_open:
            flags = flags & ~SYN
            seq = (seq + 1) & MASK
            seg_len -= 1
        elif not flags & ACK:
            cx.count("syn_retransmit_answered")
            snd.retransmit_head(cx, conn, now)
            return

    # --- first: sequence number (RFC 9293 3.10.7.4; Linux tcp_sequence)
    wnd = conn.rcv_wnd
    end = (seq + seg_len) & MASK
    ahead = (seq - rcv_nxt) & MASK                     # Linux tcp_sequence: end >= RCV.NXT, seq <= RCV.NXT + RCV.WND
    if not (((end - rcv_nxt) & MASK) < HALF and (ahead <= wnd or ahead >= HALF)):
        if flags & RST:
            cx.count("drop_rst_outside_window")
        elif flags & SYN:
            cx.count("drop_syn_outside_window")
            challenge_ack(cx, conn, now)
        else:
            cx.count("drop_outside_window")
            snd.send_ack(cx, conn)
        return

    if ts is not None and seqnum.le(seq, conn.acked_upto):
        conn.ts_recent = ts[0]                         # RFC 7323 R3: an acceptable segment's TSval

    # --- second: RST (RFC 5961 3.2: only exactly at RCV.NXT; otherwise a challenge ACK)
    if flags & RST:
        if seq == rcv_nxt:
            reset_received(cx, conn, now)
        else:
            cx.count("rst_challenged")
            challenge_ack(cx, conn, now)
        return

    # --- fourth: SYN in a synchronised state (RFC 5961 4.2): challenge ACK
    if flags & SYN:
        cx.count("drop_syn_in_window")
        challenge_ack(cx, conn, now)
        return

    # --- fifth: ACK
    if not flags & ACK:
        cx.count("drop_no_ack")
        return
    ack = seg.ack
    if state is S.SYN_RCVD:
        if not (seqnum.lt(conn.snd_una, ack) and seqnum.le(ack, conn.snd_max)):
            cx.count("drop_syn_rcvd_bad_ack")
            cx.reply_reset(conn.local_addr, conn.remote_addr, seg)
            return
        if conn.parent is not None:
            if not child_established(cx, conn, now):
                return
        else:
            enter_established(cx, conn, now, "ACK (simultaneous open)")
            cx.wake(conn)
        conn.snd_wnd = seg.window << conn.snd_wscale
        conn.snd_wl1 = seq
        conn.snd_wl2 = ack
        if conn.snd_wnd > conn.max_snd_wnd:
            conn.max_snd_wnd = conn.snd_wnd
        state = conn.state
    if seqnum.gt(ack, conn.snd_max):
        cx.count("drop_ack_unsent")                  # RFC 9293: ACK for data not yet sent -> ACK, drop
        snd.send_ack(cx, conn)
        return
    if seqnum.lt(ack, (conn.snd_una - conn.max_snd_wnd) & MASK):
        cx.count("drop_ack_too_old")                 # RFC 5961 5.2
        challenge_ack(cx, conn, now)
        return
    conn.last_recv = now
    conn.probes_out = 0
    process_ack(cx, conn, now, seg, ack, plen)
    if conn.fin_queued and conn.fin_acked:
        if state is S.FIN_WAIT_1:
            if not flags & FIN:
                cx.fin_wait_2(conn, now)
        elif state is S.CLOSING:
            cx.enter_time_wait(conn, now, "ACK of FIN")
            return
        elif state is S.LAST_ACK:
            cx.set_state(conn, now, S.CLOSED, "ACK of FIN")
            return
    state = conn.state

    # --- seventh: segment text
    if plen:
        if state is S.ESTABLISHED or state is S.FIN_WAIT_1 or state is S.FIN_WAIT_2:
            if conn.rcv_shutdown and state is not S.ESTABLISHED and seqnum.gt((seq + plen) & MASK, conn.rcv_nxt):
                # Linux: new data for a socket whose reader is gone (close or SHUT_RD) in FIN_WAIT -> RST
                cx.count("abort_on_data")
                snd.send_rst(cx, conn)
                cx.abort(conn, now, errno.ECONNRESET, "data after close / RST")
                return
            receive_data(cx, conn, now, seq, payload)
        else:
            cx.count("drop_data_after_fin")

    # --- eighth: FIN
    if flags & FIN:
        fin_pos = (seq + plen) & MASK
        d = seqnum.diff(fin_pos, conn.rcv_nxt)
        if d == 0 and conn.state in (S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2):
            fin_received(cx, conn, now)
        elif d < 0:
            conn.ack_now = True                        # a duplicate FIN: ACK it again
        elif d <= conn.rcv_wnd:
            conn.fin_seq = fin_pos                     # beyond a hole: wait for the data before it
            conn.ack_now = True
    if conn.state is S.FIN_WAIT_1 and conn.fin_acked:
        cx.fin_wait_2(conn, now)
    respond(cx, conn, now)


def respond(cx: Context, conn: Connection, now: float) -> None:
    """After a segment: send what can go now, then any ACK still owed, or schedule a delayed one."""
    if conn.state is S.CLOSED:
        return
    if conn.send_buffer or conn.fin_queued:
        snd.output(cx, conn, now)
    if conn.ack_now:
        snd.send_ack(cx, conn)
    elif conn.ack_pending and conn.timers["delayed_ack"] is None:
        cx.arm(conn, "delayed_ack", now + delack.delay(conn, cx.config.delayed_ack))


def reset_received(cx: Context, conn: Connection, now: float) -> None:
    """An acceptable RST (Linux tcp_reset): the error the application sees depends on the state."""
    state = conn.state
    if state is S.SYN_RCVD and conn.parent is not None:
        cx.set_state(conn, now, S.CLOSED, "RST (back to LISTEN)")
        return
    if state is S.SYN_SENT or state is S.SYN_RCVD:
        error = errno.ECONNREFUSED
    elif state is S.CLOSE_WAIT:
        error = errno.EPIPE
    elif state in (S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2):
        error = errno.ECONNRESET
    else:
        error = 0
    cx.abort(conn, now, error, "RST received")


# ---------------------------------------------------------------- ACK processing
def process_ack(cx: Context, conn: Connection, now: float, seg: TcpSegment, ack: int, plen: int) -> None:
    """SND.UNA, the send window, RTT, congestion window, retransmission timer (RFC 9293, 5681, 6298, 6582)."""
    snd_una = conn.snd_una
    window = seg.window << conn.snd_wscale
    same_window = window == conn.snd_wnd
    seq = seg.seq
    wl1 = conn.snd_wl1
    if (0 < ((seq - wl1) & MASK) < HALF) or (seq == wl1 and ((ack - conn.snd_wl2) & MASK) < HALF):
        if conn.snd_wnd == 0 and window:
            conn.persist_backoff = 0
            cx.cancel(conn, "persist")
        conn.snd_wnd = window
        conn.snd_wl1 = seq
        conn.snd_wl2 = ack
        if window > conn.max_snd_wnd:
            conn.max_snd_wnd = window
    acked = (ack - snd_una) & MASK
    if acked == 0 or acked >= HALF:
        if acked == 0 and conn.snd_max != snd_una:
            if conn.sack_ok:
                blocks = seg.options.sack_blocks
                newly = scoreboard.update(conn, blocks) if blocks else 0
                if newly and conn.rack is not None:
                    recovery.rack_on_ack(cx, conn, now)
            else:
                newly = 0
            # RFC 5681 duplicate ACK: no data, no SYN/FIN, same window, data outstanding; or one
            # whose SACK blocks report new data (RFC 6675 2)
            if plen == 0 and not int(seg.flags) & (FIN | SYN) and (
                    same_window or newly or (not conn.sack_ok and sacks_new_data(conn, seg))):
                duplicate_ack(cx, conn, now, newly)
            elif newly:
                recovery.strategy(conn).on_sack(cx, conn, now, newly)
            if newly and conn.rack is not None:
                recovery.rack_arm(cx, conn, now)
        return
    # --- new data acknowledged
    cfg = cx.config
    flight_before = (conn.snd_max - snd_una) & MASK
    echo = seg.options.timestamps[1] if conn.ts_ok and seg.options.timestamps else 0
    if echo:                                           # RFC 7323 4: a sample on every ACK of new data
        measured = ((cx.tsval(conn) - echo) & MASK) / 1000
        if measured < 60:                              # (an echo we never sent is no sample)
            conn.rtt.sample(measured, cfg.rto_min, cfg.rto_max)
        conn.rtt.seq = None
    elif conn.rtt.seq is not None and ((ack - conn.rtt.seq) & MASK) < HALF:
        conn.rtt.sample(now - conn.rtt.time, cfg.rto_min, cfg.rto_max)
        conn.rtt.seq = None
    buf = conn.send_buffer
    n = (ack - conn.send_buffer_seq) & MASK
    if n >= HALF:
        n = 0
    if n > len(buf):
        n = len(buf)                                   # the rest is our FIN (or SYN)
    if n:
        buf.consume(n)
        conn.send_buffer_seq = (conn.send_buffer_seq + n) & MASK
        charge(cx, conn)
    conn.snd_una = ack
    if ((conn.snd_nxt - ack) & MASK) >= HALF:
        conn.snd_nxt = ack
    sacked = 0                                         # the change in SACKed bytes (RFC 6937 DeliveredData)
    if conn.sack_ok:
        if conn.scoreboard:
            sacked = -scoreboard.sacked_bytes(conn)
            scoreboard.prune(conn, snd_una)
        blocks = seg.options.sack_blocks
        if blocks:
            scoreboard.update(conn, blocks)
        if sacked or conn.scoreboard:
            sacked += scoreboard.sacked_bytes(conn)
        if conn.rack is not None:
            recovery.rack_on_ack(cx, conn, now)
    conn.retransmits = 0
    if conn.recovery is not OPEN and recovery.covers_recover(conn, ack):
        if conn.recovery is FAST:
            recovery.exit_recovery(cx, conn, now)      # a full ACK
        else:
            conn.recovery = OPEN                       # the RTO's go-back-N is over
    if conn.recovery is FAST:
        recovery.strategy(conn).on_partial_ack(cx, conn, now, ack, acked, acked + sacked)
    else:
        conn.dupacks = 0
        if flight_before + conn.send_mss >= conn.cwnd:     # grow only when cwnd was the limit
            conn.cc.on_ack(conn, acked, now)
        if conn.recovery is OPEN:
            recovery.strategy(conn).on_ack(cx, conn, now, ack)
    if not conn.sndbuf_locked and 2 * conn.cwnd > conn.so_sndbuf:
        # Linux tcp_sndbuf_expand: a buffer the application did not size holds two congestion windows
        conn.so_sndbuf = min(2 * conn.cwnd, SNDBUF_AUTOTUNE_MAX)
    # RFC 6298 5.2 / 5.3
    if ack == conn.snd_max:
        cx.cancel(conn, "retransmit")
    else:
        snd.arm_retransmit(cx, conn, now)
        if conn.rack is not None:
            recovery.rack_arm(cx, conn, now)
    if conn.nospace and cx.writable(conn):
        conn.nospace = False
        cx.wake(conn)


def sacks_new_data(conn: Connection, seg: TcpSegment) -> bool:
    """Does this ACK's SACK option report data beyond all it reported before?  Then it is a
    duplicate ACK even if its window moved (RFC 6675 2: Linux grows its window as
    out-of-order data arrives, so with SACK its duplicate ACKs rarely repeat the window)."""
    blocks = seg.options.sack_blocks
    if not blocks:
        return False
    high = conn.sack_high
    new = False
    for _, right in blocks:
        if high is None or 0 < ((right - high) & MASK) < HALF:
            high = right
            new = True
    conn.sack_high = high
    return new


def duplicate_ack(cx: Context, conn: Connection, now: float, sacked: int) -> None:
    """RFC 5681 3.2 / RFC 6675 5: counted, then what the connection's loss recovery makes of it
    (`sacked`: the bytes it newly SACKed)."""
    conn.dupacks += 1
    recovery.strategy(conn).on_dupack(cx, conn, now, sacked)


# ---------------------------------------------------------------- data and FIN
def _append_in_order(cx: Context, conn: Connection, now: float, payload: bytes, plen: int) -> None:
    """In-order data that fits the window (tcp_queue; the common path)."""
    if plen > conn.rcv_mss:
        ours = cx.config.mss
        conn.rcv_mss = plen if plen < ours else ours
    buf = conn.recv_buffer
    was_empty = not buf.length
    buf.append(payload)
    rcv_nxt = conn.rcv_nxt = (conn.rcv_nxt + plen) & MASK
    delack.data_received(conn, now, plen, cx.config.quickacks)
    if ((rcv_nxt - conn.acked_upto) & MASK) >= 2 * conn.rcv_mss or delack.ack_at_once(conn):
        conn.ack_now = True                            # every second full-sized segment; quick ACKs
    else:
        conn.ack_pending = True
    if was_empty:
        cx.wake(conn)


def receive_data(cx: Context, conn: Connection, now: float, seq: int, payload: bytes) -> None:
    """Queue a segment's text: trim to the window, in order or into the out-of-order queue."""
    plen = len(payload)
    rcv_nxt = conn.rcv_nxt
    d = seqnum.diff(rcv_nxt, seq)
    if d > 0:                                          # starts before RCV.NXT: partly or wholly a duplicate
        conn.ack_now = True
        if d >= plen:
            cx.count("duplicate_segments")
            return
        payload = payload[d:]
        plen -= d
        seq = rcv_nxt
    room = seqnum.diff(conn.rcv_adv, seq)
    if room < plen:                                    # beyond the window we offered
        conn.ack_now = True
        if room <= 0:
            cx.count("drop_beyond_window")
            return
        payload = payload[:room]
        plen = room
    buf = conn.recv_buffer
    headroom = charge(cx, conn)
    if plen > headroom:                                # tcp.mem_max reached (Linux: tcp_try_rmem_schedule)
        if buf.length or buf.ooo_len:
            cx.count("drop_mem_pressure")              # the sender retransmits once there is room
            conn.ack_now = True
            return
        if plen > conn.rcv_mss:                        # a connection holding nothing takes a segment,
            payload = payload[:conn.rcv_mss]           # so that every one can go on
            plen = conn.rcv_mss
    if seq == rcv_nxt:
        _append_in_order(cx, conn, now, payload, plen)
        if buf.ooo:
            moved = buf.deliver_out_of_order(conn.rcv_nxt)
            if moved:
                conn.rcv_nxt = (conn.rcv_nxt + moved) & MASK
                conn.ack_now = True                    # a segment that fills a hole is ACKed at once
        if conn.fin_seq is not None and conn.fin_seq == conn.rcv_nxt:
            fin_received(cx, conn, now)
    else:
        buf.insert_out_of_order(rcv_nxt, seq, payload)
        cx.count("ofo_segments")
        conn.ack_now = True                            # out-of-order: duplicate ACK at once (RFC 5681 4.2)
    charge(cx, conn)


def fin_received(cx: Context, conn: Connection, now: float) -> None:
    """The peer's FIN, in order (RFC 9293 3.10.7.4 eighth; Linux tcp_fin)."""
    conn.rcv_nxt = (conn.rcv_nxt + 1) & MASK
    conn.fin_seq = None
    conn.done = True
    conn.rcv_shutdown = True
    conn.ack_now = True
    cx.wake(conn)
    state = conn.state
    if state is S.ESTABLISHED:
        cx.set_state(conn, now, S.CLOSE_WAIT, "FIN / ACK (passive close)")
    elif state is S.FIN_WAIT_1:
        if conn.fin_acked:
            cx.enter_time_wait(conn, now, "FIN+ACK / ACK")
        else:
            cx.set_state(conn, now, S.CLOSING, "FIN / ACK (simultaneous close)")
    elif state is S.FIN_WAIT_2:
        cx.enter_time_wait(conn, now, "FIN / ACK")
