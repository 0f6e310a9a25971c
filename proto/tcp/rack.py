"""RACK: time-based loss detection (RFC 8985 6; Linux net/ipv4/tcp_recovery.c).

A segment is lost when a segment sent after it has been delivered (cumulatively ACKed or
SACKed) and more than a round trip plus a reordering window has passed since it was sent:
`xmit_ts + RACK.rtt + reo_wnd <= now`.  This finds, beside the duplicate-ACK rule of
RFC 6675 (scoreboard.py), what that rule cannot: a lost retransmission, a loss with fewer
than three segments SACKed above it (the tail of a flight, a small window), and it waits a
little (reo_wnd, a quarter of the minimum RTT) before calling a reordered segment lost.

State (`conn.rack`, made when the handshake agrees on SACK and `tcp.rack` is on):
  sent      segment start -> [end, xmit time, retransmitted, lost, n], in the order of the last
            transmission (a retransmission moves its segment to the end), as Linux's
            tsorted_sent_queue; n counts transmissions (segments sent in one burst share a
            time); entries leave when the segment is ACKed or SACKed
  xmit_ts, order    the most recently sent of the segments delivered so far (RACK.xmit_ts, and
            its n in place of RACK.end_seq as the tie-breaker); rtt its RTT (RACK.rtt);
            fack the highest end delivered (RACK.fack)
  min_rtt   the smallest RTT seen; reord: reordering was seen (RACK.reordering_seen)
  lost      [(start, end)] sorted, absolute: what RACK marked lost and was not resent since

Nothing here runs on the fast path but `sent`'s bookkeeping: one dict insertion per segment
sent and pops from its front as the ACKs move on.
"""
from __future__ import annotations

from proto.tcp import seqnum
from proto.tcp.state import Recovery

MASK = seqnum.MASK
HALF = seqnum.HALF
DUP_THRESH = 3
OPEN = Recovery.OPEN


class RackState:
    __slots__ = ("sent", "xmit_ts", "order", "count", "rtt", "fack", "min_rtt", "reord", "lost", "rexmits",
                 "timeout")

    def __init__(self) -> None:
        self.sent: dict[int, list] = {}
        self.xmit_ts: float | None = None
        self.order = 0
        self.count = 0                  # transmissions so far
        self.rtt = 0.0
        self.fack: int | None = None
        self.min_rtt: float | None = None
        self.reord = False
        self.lost: list[tuple[int, int]] = []
        self.rexmits = 0                # entries in `sent` that are retransmissions
        self.timeout: float | None = None   # when the reordering timer should look again


def _after(t1: float, n1: int, t2: float, n2: int) -> bool:
    """RACK_sent_after: (t1, n1) was sent after (t2, n2).  RFC 8985 breaks a tie of times by
    the end sequence number, which is wrong for a retransmission sent after new data in one
    burst; the order of transmission is used instead (Linux keeps the time-sorted queue)."""
    return t1 > t2 or (t1 == t2 and n1 > n2)


# ---------------------------------------------------------------- transmission
def on_sent(rk: RackState, start: int, end: int, now: float, again: bool) -> None:
    """A data segment [start, end) left (again: a retransmission of what was sent before)."""
    sent = rk.sent
    if again:
        old = sent.pop(start, None)
        if old is None or old[0] != end:
            # boundaries differ from the first transmission (go-back-N, a window-cut resend):
            # drop every entry that starts inside [start, end)
            span = (end - start) & MASK
            for s in [s for s in sent if ((s - start) & MASK) < span]:
                if sent.pop(s)[2]:
                    rk.rexmits -= 1
            if old is not None and old[2]:
                rk.rexmits -= 1
        elif old[2]:
            rk.rexmits -= 1
        if rk.lost:
            _unmark(rk, start, end)
        rk.rexmits += 1
    rk.count += 1
    sent[start] = [end, now, again, False, rk.count]


def _unmark(rk: RackState, start: int, end: int) -> None:
    """[start, end) was resent: no longer lost-and-waiting."""
    out = []
    for s, e in rk.lost:
        if ((e - start) & MASK) >= HALF or e == start or ((s - end) & MASK) < HALF:
            out.append((s, e))                        # no overlap
            continue
        if 0 < ((start - s) & MASK) < HALF:
            out.append((s, start))
        if 0 < ((e - end) & MASK) < HALF:
            out.append((end, e))
    rk.lost = out


# ---------------------------------------------------------------- delivery
def _sacked(board: list, una: int, start: int, end: int) -> bool:
    lo = (start - una) & MASK
    if lo >= HALF:
        lo = 0                                       # partly acknowledged
    hi = (end - una) & MASK
    for s, e in board:
        so = (s - una) & MASK
        if so > lo:
            return False
        if ((e - una) & MASK) >= hi:
            return True
    return False


def _delivered(rk: RackState, end: int, xmit: float, again: bool, n: int, now: float) -> None:
    """RFC 8985 6.2 steps 2-3 for one delivered segment."""
    rtt = now - xmit
    if again and rk.min_rtt is not None and rtt < rk.min_rtt:
        return                                       # ambiguous: the ACK of the first transmission
    if rk.min_rtt is None or rtt < rk.min_rtt:
        rk.min_rtt = rtt
    if rk.xmit_ts is None or _after(xmit, n, rk.xmit_ts, rk.order):
        rk.rtt = rtt
        rk.xmit_ts = xmit
        rk.order = n
    if rk.fack is None or 0 < ((end - rk.fack) & MASK) < HALF:
        rk.fack = end
    elif not again and end != rk.fack:
        rk.reord = True                              # delivered below what was delivered already


def on_ack(rk: RackState, una: int, board: list, now: float, full_scan: bool) -> None:
    """After an ACK: what it delivered (below SND.UNA `una`, or SACKed on `board`) leaves
    `sent` and updates RACK's most recently delivered segment.  Without SACK information and
    retransmissions, `sent` is in sequence order and only its front can have been delivered."""
    sent = rk.sent
    if not full_scan and not board and not rk.rexmits:
        while sent:
            start = next(iter(sent))
            ent = sent[start]
            if 0 < ((ent[0] - una) & MASK) < HALF:
                break
            del sent[start]
            _delivered(rk, ent[0], ent[1], False, ent[4], now)
    else:
        gone = []
        for start, ent in sent.items():
            end = ent[0]
            if not 0 < ((end - una) & MASK) < HALF or (board and _sacked(board, una, start, end)):
                gone.append(start)
                _delivered(rk, end, ent[1], ent[2], ent[4], now)
        for start in gone:
            if sent.pop(start)[2]:
                rk.rexmits -= 1
    if rk.lost:
        rk.lost = [(s if 0 < ((s - una) & MASK) < HALF else una, e) for s, e in rk.lost
                   if 0 < ((e - una) & MASK) < HALF]
        if board and rk.lost:
            rk.lost = _minus(rk.lost, board, una)


def _minus(ranges: list, board: list, una: int) -> list:
    """`ranges` without what the scoreboard holds (a super-segment is marked lost whole, but the
    peer may hold some of its packets)."""
    cut = sorted(((s - una) & MASK, (e - una) & MASK) for s, e in board)
    out = []
    for s, e in ranges:
        lo, hi = (s - una) & MASK, (e - una) & MASK
        for cs, ce in cut:
            if ce <= lo or cs >= hi:
                continue
            if cs > lo:
                out.append(((una + lo) & MASK, (una + cs) & MASK))
            lo = ce
            if lo >= hi:
                break
        if lo < hi:
            out.append(((una + lo) & MASK, (una + hi) & MASK))
    return out


# ---------------------------------------------------------------- detection
def reo_wnd(rk: RackState, recovery: Recovery, sacked_segs: int, srtt: float | None) -> float:
    """RFC 8985 6.2 step 4 (Linux tcp_rack_reo_wnd)."""
    if not rk.reord and (recovery is not OPEN or sacked_segs >= DUP_THRESH):
        return 0.0
    wnd = (rk.min_rtt or 0.0) / 4
    if srtt is not None and wnd > srtt:
        wnd = srtt
    return wnd


def detect(rk: RackState, una: int, board: list, now: float, reo: float) -> int:
    """RFC 8985 6.2 step 5 (Linux tcp_rack_detect_loss): mark lost every segment sent before
    the most recently delivered one whose time is up; `timeout` is set to when the next one's
    time will be up (None: nothing waits).  Returns the segments newly marked lost."""
    rk.timeout = None
    if rk.xmit_ts is None:
        return 0
    xmit_ts, order, rtt = rk.xmit_ts, rk.order, rk.rtt
    newly = []
    wait = 0.0
    for start, ent in rk.sent.items():
        end, t, _, lost, n = ent
        if not _after(xmit_ts, order, t, n):
            break                                    # sent after the most recently delivered: too early
        if lost:
            continue
        remaining = t + rtt + reo - now
        if remaining <= 1e-9:
            ent[3] = True
            newly.append((start, end))
        elif remaining > wait:
            wait = remaining
    if wait:
        rk.timeout = now + wait
    if newly:
        _mark(rk, _minus(newly, board, una) if board else newly, una)
    return len(newly)


def _mark(rk: RackState, ranges: list, una: int) -> None:
    merged: list[list[int]] = []
    for s, e in sorted(((s - una) & MASK, (e - una) & MASK) for s, e in rk.lost + ranges):
        if merged and s <= merged[-1][1]:
            if e > merged[-1][1]:
                merged[-1][1] = e
        else:
            merged.append([s, e])
    rk.lost = [((una + s) & MASK, (una + e) & MASK) for s, e in merged]


def on_rto(rk: RackState) -> None:
    """The retransmission timer expired: go-back-N resends everything; what was marked is moot."""
    rk.lost = []
    rk.timeout = None
    for ent in rk.sent.values():
        ent[3] = False
