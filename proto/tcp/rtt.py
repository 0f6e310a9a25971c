"""Retransmission timeout (RFC 6298): SRTT, RTTVAR, RTO, Karn's rule.

Karn's rule is applied by the caller: only a segment never retransmitted is
timed (`Connection.rtt_seq`), and a retransmission discards the timing.
"""
from __future__ import annotations

CLOCK_GRANULARITY = 0.001   # G of RFC 6298 (seconds)
ALPHA, BETA = 1 / 8, 1 / 4


def rtt_sample(conn, r: float, rto_min: float, rto_max: float) -> None:
    """Fold one measurement `r` (seconds) into conn.srtt/rttvar and recompute conn.rto."""
    if r < 0:
        r = 0.0
    if conn.srtt is None:                     # (2.2) first measurement
        conn.srtt = r
        conn.rttvar = r / 2
    else:                                     # (2.3)
        conn.rttvar = (1 - BETA) * conn.rttvar + BETA * abs(conn.srtt - r)
        conn.srtt = (1 - ALPHA) * conn.srtt + ALPHA * r
    conn.rto = clamp_rto(conn.srtt + max(CLOCK_GRANULARITY, 4 * conn.rttvar), rto_min, rto_max)


def clamp_rto(rto: float, rto_min: float, rto_max: float) -> float:
    return min(max(rto, rto_min), rto_max)


def backoff(conn, rto_max: float) -> None:
    """(5.5) On expiry of the retransmission timer, double the RTO (up to rto_max)."""
    conn.rto = min(conn.rto * 2, rto_max)
