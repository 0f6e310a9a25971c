"""The SACK scoreboard of our sender (RFC 6675): what the peer holds, what is lost, the pipe.

The scoreboard (`conn.scoreboard`) is a sorted list of non-overlapping [start, end) sequence
ranges above SND.UNA that the peer has SACKed, merged as blocks arrive and pruned as SND.UNA
advances.  D-SACK blocks (below SND.UNA) and blocks outside [SND.UNA, SND.MAX] are ignored.

A hole (unSACKed range between SND.UNA and the highest SACKed byte) is lost (IsLost, DupThresh
= 3) when more than (DupThresh - 1) * SMSS bytes above it are SACKed; since nothing inside a
hole is SACKed, a hole is lost or not as a whole.  Pipe, NextSeg (rules 1-3) and the
transmission step (C) of RFC 6675 5 work on the list of holes.

Everything here runs only when an ACK carries SACK blocks or SACK recovery is on: the fast
path never calls it.
"""
from __future__ import annotations

from proto.tcp import seqnum
from proto.tcp.connection import Connection
from proto.tcp.state import Recovery

MASK = seqnum.MASK
HALF = seqnum.HALF
DUP_THRESH = 3


# ---------------------------------------------------------------- the scoreboard
def offsets(conn: Connection) -> list[tuple[int, int]]:
    """The scoreboard as (start, end) offsets from SND.UNA, sorted."""
    una = conn.snd_una
    return [((s - una) & MASK, (e - una) & MASK) for s, e in conn.scoreboard]


def _store(conn: Connection, ranges: list[tuple[int, int]]) -> None:
    una = conn.snd_una
    conn.scoreboard = [((una + s) & MASK, (una + e) & MASK) for s, e in ranges]


def update(conn: Connection, blocks) -> int:
    """Record an ACK's SACK blocks (RFC 6675 Update()); returns the bytes newly SACKed."""
    una = conn.snd_una
    span = (conn.snd_max - una) & MASK
    ranges = None
    added = 0
    for left, right in blocks:
        lo = (left - una) & MASK
        hi = (right - una) & MASK
        if lo >= HALF or hi > span or lo >= hi:
            continue                                   # D-SACK, stale or bogus: ignored
        if ranges is None:
            ranges = offsets(conn)
        new = hi - lo
        out = []
        for s, e in ranges:
            if e < lo or s > hi:
                out.append((s, e))
                continue
            overlap = min(e, hi) - max(s, lo)
            if overlap > 0:
                new -= overlap
            if s < lo:
                lo = s
            if e > hi:
                hi = e
        out.append((lo, hi))
        out.sort()
        ranges = out
        added += new
    if added:
        _store(conn, ranges)
    return added


def prune(conn: Connection, old_una: int) -> None:
    """SND.UNA moved from old_una: drop what it covers (the board holds absolute numbers)."""
    una = conn.snd_una
    out = []
    for s, e in conn.scoreboard:
        if ((e - una) & MASK) >= HALF or e == una:
            continue                                   # wholly acknowledged
        if ((s - una) & MASK) >= HALF:
            s = una
        out.append((s, e))
    conn.scoreboard = out


def sacked_bytes(conn: Connection) -> int:
    return sum((e - s) & MASK for s, e in conn.scoreboard)


def is_sacked(conn: Connection, seq: int) -> bool:
    off = (seq - conn.snd_una) & MASK
    return any(s <= off < e for s, e in offsets(conn))


def is_lost(conn: Connection, seq: int) -> bool:
    """RFC 6675 IsLost: more than (DupThresh - 1) * SMSS bytes above `seq` are SACKed."""
    off = (seq - conn.snd_una) & MASK
    above = 0
    for s, e in offsets(conn):
        if s <= off < e:
            return False                               # SACKed itself
        if e > off:
            above += e - (s if s > off else off)
    return above > (DUP_THRESH - 1) * conn.send_mss


def holes(conn: Connection) -> list[tuple[int, int, bool]]:
    """The unSACKed ranges in [SND.UNA, SND.MAX) as (start, end, lost) offsets, lowest first."""
    ranges = offsets(conn)
    span = (conn.snd_max - conn.snd_una) & MASK
    limit = (DUP_THRESH - 1) * conn.send_mss
    above = sum(e - s for s, e in ranges)
    out = []
    prev = 0
    for s, e in ranges:
        if s > prev:
            out.append((prev, s, above > limit))
        above -= e - s
        prev = e
    if prev < span:
        out.append((prev, span, False))
    rk = conn.rack
    if rk is not None and rk.lost:
        out = _rack_split(out, rk.lost, conn.snd_una)
    return out


def _rack_split(hs: list, lost: list, una: int) -> list:
    """Holes cut where RACK marked ranges lost (rack.py): a marked piece is lost whatever the
    duplicate-ACK rule says."""
    marks = sorted(((s - una) & MASK, (e - una) & MASK) for s, e in lost)
    out = []
    for lo, hi, is_lost in hs:
        if is_lost:
            out.append((lo, hi, True))
            continue
        at = lo
        for s, e in marks:
            if e <= at or s >= hi:
                continue
            if s > at:
                out.append((at, s, False))
                at = s
            end = e if e < hi else hi
            out.append((at, end, True))
            at = end
        if at < hi:
            out.append((at, hi, False))
    return out


def _high_rxt(conn: Connection) -> int:
    hr = (conn.high_rxt - conn.snd_una) & MASK
    return 0 if hr >= HALF else hr


def pipe(conn: Connection, hs: list | None = None) -> int:
    """RFC 6675 SetPipe: bytes believed in the network (not SACKed and not lost, plus retransmitted)."""
    if hs is None:
        hs = holes(conn)
    hr = _high_rxt(conn) if conn.recovery is Recovery.FAST else 0
    total = 0
    for lo, hi, lost in hs:
        if not lost:
            total += hi - lo
        if hr > lo:
            total += (hr if hr < hi else hi) - lo
    return total


def next_seg(conn: Connection, hs: list) -> tuple[int, int] | None:
    """RFC 6675 NextSeg rules 1 and 3 (rule 2, new data, is the caller's): the (offset, size) of the
    retransmission to send next, or None.  Rule 1: the first lost hole above HighRxt; rule 3 (by the
    caller after rule 2): the first unSACKed byte above HighRxt below the highest SACKed byte."""
    hr = _high_rxt(conn)
    mss = conn.send_mss
    for lo, hi, lost in hs:
        if lost:
            start = lo if lo > hr else hr
            if start < hi:
                return start, min(mss, hi - start)
    return None


def rule3(conn: Connection, hs: list) -> tuple[int, int] | None:
    hr = _high_rxt(conn)
    mss = conn.send_mss
    top = offsets(conn)[-1][1] if conn.scoreboard else 0     # the highest SACKed byte + 1
    for lo, hi, lost in hs:
        if lo >= top:
            break
        start = lo if lo > hr else hr
        if start < hi:
            return start, min(mss, hi - start)
    return None




def skip_sacked(conn: Connection, seq: int) -> tuple[int, int | None]:
    """For go-back-N after an RTO: `seq` moved past any SACKed range holding it, and how many bytes
    may follow before the next SACKed range (None: no limit)."""
    una = conn.snd_una
    off = (seq - una) & MASK
    for s, e in offsets(conn):
        if off < s:
            return (una + off) & MASK, s - off
        if off < e:
            off = e
    return (una + off) & MASK, None


def sacked_below(conn: Connection, seq: int) -> int:
    off = (seq - conn.snd_una) & MASK
    total = 0
    for s, e in offsets(conn):
        if s >= off:
            break
        total += (e if e < off else off) - s
    return total
