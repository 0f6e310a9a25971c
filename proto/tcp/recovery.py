"""Loss recovery: one state per connection (`conn.recovery`, state.Recovery) and a strategy
chosen by what the handshake agreed (gVisor's reno_recovery.go and sack_recovery.go):

  RenoRecovery   NewReno fast retransmit and fast recovery (RFC 5681 3.2, RFC 6582), with
                 Limited Transmit (RFC 3042)
  SackRecovery   conservative SACK-based recovery (RFC 6675 5) over the scoreboard
                 (scoreboard.py), with lost-retransmission detection

Both answer the same events: a duplicate ACK, a partial ACK in fast recovery, new data
acknowledged out of recovery, new SACK information in recovery.  Entering and leaving
recovery, the RTO's loss state, and the tail loss probe (RFC 8985 7) are shared.  How much
cwnd and ssthresh change is the congestion control's (congestion.py), never decided here.
"""
from __future__ import annotations

from proto.tcp import rack, scoreboard, snd
from proto.tcp.connection import Connection
from proto.tcp.context import Context
from proto.tcp.scoreboard import HALF, MASK, holes, next_seg, pipe, rule3
from proto.tcp.state import Recovery

OPEN, FAST, LOSS = Recovery.OPEN, Recovery.FAST, Recovery.LOSS
DUP_THRESH = scoreboard.DUP_THRESH


# ---------------------------------------------------------------- shared steps
def covers_recover(conn: Connection, ack: int) -> bool:
    """SND.UNA (after `ack`) has reached the recovery point: a full ACK."""
    return ((ack - conn.recover) & MASK) < HALF


def exit_recovery(cx: Context, conn: Connection, now: float) -> None:
    """A full ACK ends fast recovery (RFC 6582 3.2 step 3, RFC 6675 5 (A))."""
    conn.cc.on_recovery_exit(conn, now)
    conn.recovery = OPEN
    conn.rxt_marks.clear()
    conn.dupacks = 0


def enter_loss(cx: Context, conn: Connection, now: float) -> None:
    """The retransmission timer expired (RFC 5681 3.1, RFC 6298 5.5-5.7): the loss window,
    go-back-N from SND.UNA until the ACKs pass what was sent before (`recover`)."""
    cx.counters["rto_expiries"] += 1
    conn.cc.on_rto(conn, now)
    conn.recovery = LOSS
    conn.rxt_marks.clear()
    conn.dupacks = 0
    conn.recover = conn.snd_max
    conn.high_rxt = conn.snd_una                     # the scoreboard stays: go-back-N skips SACKed ranges
    if conn.scoreboard and conn.scoreboard[0][0] == conn.snd_una:
        conn.scoreboard = []                         # SACKed yet unacknowledged at SND.UNA: the peer reneged
    conn.snd_nxt = conn.snd_una
    if conn.rack is not None:
        rack.on_rto(conn.rack)


def rfc3042_limited_transmit(cx: Context, conn: Connection, now: float) -> None:
    """Limited transmit (RFC 3042): each of the first two duplicate ACKs says a segment left the
    network; send one new segment for it (window permitting), so a small window still gathers
    the three duplicate ACKs of a fast retransmit instead of waiting for the RTO."""
    cwnd = conn.cwnd
    conn.cwnd = cwnd + conn.dupacks * conn.send_mss
    snd.output(cx, conn, now)
    conn.cwnd = cwnd


# ---------------------------------------------------------------- NewReno
class RenoRecovery:
    @staticmethod
    def on_dupack(cx: Context, conn: Connection, now: float, sacked: int) -> None:
        if conn.recovery is FAST:
            conn.cwnd += conn.send_mss                 # inflate for each segment that left the network
        elif conn.recovery is OPEN:
            if conn.dupacks < DUP_THRESH:
                rfc3042_limited_transmit(cx, conn, now)
            elif conn.dupacks == DUP_THRESH:           # fast retransmit, fast recovery (RFC 6582 3.2 step 2)
                conn.cc.on_loss(conn, now)
                conn.recover = conn.snd_max
                conn.recovery = FAST
                cx.counters["fast_retransmits"] += 1
                snd.retransmit_head(cx, conn, now)
                conn.cwnd = conn.ssthresh + DUP_THRESH * conn.send_mss

    @staticmethod
    def on_partial_ack(cx: Context, conn: Connection, now: float, ack: int, acked: int, delivered: int) -> None:
        """RFC 6582 3.2 step 4: retransmit the next hole, deflate by what was acknowledged."""
        mss = conn.send_mss
        snd.retransmit_head(cx, conn, now)
        conn.cwnd = max(conn.cwnd - acked + mss, mss)

    @staticmethod
    def on_ack(cx: Context, conn: Connection, now: float, ack: int) -> None:
        """New data acknowledged out of recovery: nothing more to learn without SACK."""

    @staticmethod
    def on_sack(cx: Context, conn: Connection, now: float, sacked: int) -> None:
        """(No SACK information without SACK.)"""


# ---------------------------------------------------------------- SACK
class SackRecovery:
    @staticmethod
    def on_dupack(cx: Context, conn: Connection, now: float, sacked: int) -> None:
        if conn.recovery is FAST:
            proportional_rate_reduction(conn, sacked)
            transmit(cx, conn, now)                    # RFC 6675 5 (C): send what the pipe allows
        elif conn.recovery is OPEN:
            if (conn.dupacks >= DUP_THRESH or (conn.scoreboard and scoreboard.is_lost(conn, conn.snd_una))
                    or (conn.rack is not None and conn.rack.lost)):
                enter_recovery(cx, conn, now, sacked)  # RFC 6675 5 (4)
            elif conn.scoreboard:
                limited_transmit(cx, conn, now)        # RFC 6675 5 (3)
            else:
                rfc3042_limited_transmit(cx, conn, now)    # no SACK information yet

    @staticmethod
    def on_partial_ack(cx: Context, conn: Connection, now: float, ack: int, acked: int, delivered: int) -> None:
        """RFC 6675 5 (B), (C), with the window that PRR allows."""
        proportional_rate_reduction(conn, delivered)
        if (conn.rack is None and ((ack - conn.high_rxt) & MASK) < HALF
                and not scoreboard.is_sacked(conn, ack)):
            # the head was sent before the retransmissions now acknowledged: lost (RFC 6582)
            retransmit(cx, conn, now, 0, min(conn.send_mss, (conn.snd_max - ack) & MASK))
        transmit(cx, conn, now)

    @staticmethod
    def on_ack(cx: Context, conn: Connection, now: float, ack: int) -> None:
        """New data acknowledged out of recovery: RFC 6675 5 IsLost(HighACK + 1) starts recovery,
        else Limited Transmit as the scoreboard allows."""
        if (conn.scoreboard or (conn.rack is not None and conn.rack.lost)) and ack != conn.snd_max:
            if scoreboard.is_lost(conn, ack) or (conn.rack is not None and conn.rack.lost):
                enter_recovery(cx, conn, now, 0)
            else:
                limited_transmit(cx, conn, now)

    @staticmethod
    def on_sack(cx: Context, conn: Connection, now: float, sacked: int) -> None:
        """An ACK with new SACK information that is not a duplicate ACK (its window moved)."""
        if conn.recovery is FAST:
            proportional_rate_reduction(conn, sacked)
            transmit(cx, conn, now)
        elif conn.recovery is OPEN and conn.rack is not None and conn.rack.lost:
            enter_recovery(cx, conn, now, sacked)


def strategy(conn: Connection) -> type[RenoRecovery] | type[SackRecovery]:
    return SackRecovery if conn.sack_ok else RenoRecovery


def enter_recovery(cx: Context, conn: Connection, now: float, delivered: int) -> None:
    """RFC 6675 5 step (4): RecoveryPoint = HighData, ssthresh by the congestion control's
    decrease, retransmit the first segment; then, while in recovery, cwnd follows Proportional
    Rate Reduction (RFC 6937) down to ssthresh, and what the pipe allows is sent."""
    flight = (conn.snd_max - conn.snd_una) & MASK
    conn.cc.on_loss(conn, now)
    conn.recover = conn.snd_max
    conn.recovery = FAST
    conn.high_rxt = conn.snd_una
    conn.rxt_marks.clear()
    conn.prr_delivered = conn.prr_out = 0
    conn.recover_fs = flight or conn.send_mss
    if conn.pto_armed or conn.reo_armed:               # the probe timer becomes the RTO again
        conn.pto_armed = conn.reo_armed = False
        cx.arm(conn, "retransmit", now + conn.rtt.rto)
    cx.counters["fast_retransmits"] += 1
    cx.count("sack_recoveries")
    retransmit(cx, conn, now, 0, min(conn.send_mss, flight))      # the fast retransmit, always
    proportional_rate_reduction(conn, delivered)
    transmit(cx, conn, now)


def proportional_rate_reduction(conn: Connection, delivered: int) -> None:
    """RFC 6937 3 (PRR-SSRB): after an ACK that reports `delivered` bytes as having left the
    network, let cwnd allow sending in proportion to them, so that the window comes down to
    ssthresh smoothly over the round trip instead of at once (no burst, no silence), and
    grows back no faster than slow start when the pipe fell below ssthresh."""
    if delivered > 0:
        conn.prr_delivered += delivered
    pipe_now = pipe(conn)
    ssthresh = conn.ssthresh
    if pipe_now > ssthresh:                                     # proportional rate reduction
        sndcnt = -(-conn.prr_delivered * ssthresh // conn.recover_fs) - conn.prr_out
    else:                                                       # slow start reduction bound
        limit = max(conn.prr_delivered - conn.prr_out, delivered) + conn.send_mss
        sndcnt = min(ssthresh - pipe_now, limit)
    conn.cwnd = pipe_now + (sndcnt if sndcnt > 0 else 0)


def retransmit(cx: Context, conn: Connection, now: float, off: int, size: int) -> int:
    seq = (conn.snd_una + off) & MASK
    rk = conn.rack
    if rk is not None:
        ent = rk.sent.get(seq)
        if ent is not None and ent[2] and not ent[3]:
            # already retransmitted and in flight: RACK says when that copy is lost too (Linux
            # skips TCPCB_SACKED_RETRANS); HighRxt passes it as if it had just been sent
            end = ent[0]
            if ((end - conn.high_rxt) & MASK) < HALF:
                conn.high_rxt = end
            return (end - seq) & MASK
    used = snd.send_range(cx, conn, now, seq, size)
    if used:
        end = (seq + used) & MASK
        if ((end - conn.high_rxt) & MASK) < HALF:
            conn.high_rxt = end
        conn.rtt.seq = None                            # Karn
        marks = conn.rxt_marks
        if len(marks) > 256:
            marks.clear()
        marks[seq] = conn.snd_max                      # for detecting a lost retransmission
        cx.count("sack_retransmits")
        if conn.recovery is FAST:
            conn.prr_out += used
    return used


def transmit(cx: Context, conn: Connection, now: float) -> None:
    """RFC 6675 5 step (C): while cwnd - pipe >= 1 SMSS, send NextSeg."""
    mss = conn.send_mss
    una = conn.snd_una
    mark = conn.rxt_marks.get(una)
    if (mark is not None and conn.rack is None and conn.scoreboard
            and 0 < ((conn.scoreboard[-1][1] - mark) & MASK) < HALF):
        # Data sent after the head's retransmission has been SACKed, the head is still missing:
        # that retransmission was lost too (Linux tcp_mark_lost_retrans): send it again now
        # rather than wait for the RTO.
        cx.count("sack_lost_retransmits")
        retransmit(cx, conn, now, 0, min(mss, (conn.snd_max - una) & MASK))
    rk = conn.rack
    if rk is not None and rk.lost:
        # what RACK marked lost goes first, a lost retransmission below HighRxt too (RFC 8985 6.2:
        # a segment marked lost is retransmitted whether or not it was retransmitted before)
        for _ in range(1000):
            if not rk.lost or conn.cwnd - pipe(conn) < mss:
                break
            start, end = rk.lost[0]
            off = (start - una) & MASK
            if off >= HALF:
                break
            if not retransmit(cx, conn, now, off, min(mss, (end - start) & MASK)):
                break
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
        used = snd.send_new(cx, conn, now, mss)        # rule 2
        if used:
            conn.prr_out += used
            continue
        nxt = rule3(conn, hs)                          # rule 3
        if nxt is None or not retransmit(cx, conn, now, *nxt):
            return


def limited_transmit(cx: Context, conn: Connection, now: float) -> None:
    """RFC 6675 5 step (3): before recovery, new data as cwnd - pipe allows (Limited Transmit
    measured by the scoreboard: a SACKed segment has left the network)."""
    mss = conn.send_mss
    for _ in range(1000):
        if conn.cwnd - pipe(conn) < mss or not snd.send_new(cx, conn, now, mss):
            return




# ---------------------------------------------------------------- RACK (rack.py)
def rack_on_ack(cx: Context, conn: Connection, now: float) -> None:
    """After an ACK updated SND.UNA and the scoreboard: RACK learns what was delivered and marks
    what is lost by time (RFC 8985 6.2); the caller's recovery step then retransmits it."""
    rk = conn.rack
    reord = rk.reord
    rack.on_ack(rk, conn.snd_una, conn.scoreboard, now, conn.recovery is not OPEN)
    if rk.reord and not reord:
        cx.count("rack_reordering_seen")
    rack_detect(cx, conn, now)


def rack_detect(cx: Context, conn: Connection, now: float) -> None:
    rk = conn.rack
    rk.timeout = None
    if rk.xmit_ts is None or not rk.sent or conn.recovery is LOSS:
        return
    first = rk.sent[next(iter(rk.sent))]
    if not rack._after(rk.xmit_ts, rk.order, first[1], first[4]):
        return                                       # the oldest in flight was sent after: nothing to judge
    sacked_segs = scoreboard.sacked_bytes(conn) // conn.send_mss if conn.scoreboard else 0
    reo = rack.reo_wnd(rk, conn.recovery, sacked_segs, conn.rtt.srtt)
    lost = rack.detect(rk, conn.snd_una, conn.scoreboard, now, reo)
    if lost:
        cx.count("rack_marked_lost", lost)


def rack_arm(cx: Context, conn: Connection, now: float) -> None:
    """After an ACK: RACK's reordering timer (RFC 8985 6.3) takes the retransmission timer's
    place when it comes first; when it fires, rack_timeout looks again."""
    rk = conn.rack
    deadline = rk.timeout
    if deadline is None or conn.snd_una == conn.snd_max:
        return
    current = conn.timers["retransmit"]
    if current is None or deadline < current:
        conn.pto_armed = False
        conn.reo_armed = True
        cx.arm(conn, "retransmit", deadline)


def rack_timeout(cx: Context, conn: Connection, now: float) -> None:
    """The reordering timer went off (RFC 8985 6.3, Linux tcp_rack_reo_timeout): mark what is now
    lost, recover it, and run the retransmission timer again."""
    conn.reo_armed = False
    cx.count("rack_reo_timeouts")
    if conn.recovery is not LOSS:
        rack_detect(cx, conn, now)
        if conn.rack.lost:
            if conn.recovery is OPEN:
                enter_recovery(cx, conn, now, 0)
            else:
                transmit(cx, conn, now)
    snd.arm_retransmit(cx, conn, now)
    rack_arm(cx, conn, now)


# ---------------------------------------------------------------- tail loss probe
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
        conn.rtt.seq = None
    conn.pto_armed = conn.reo_armed = False
    cx.arm(conn, "retransmit", now + conn.rtt.rto)
