"""Retransmission timeout (RFC 6298): SRTT, RTTVAR, RTO, and the segment being timed.

Karn's rule is applied by the callers: only a segment never retransmitted is
timed (`seq`: the sequence number that ends it), and a retransmission
discards the timing (`seq = None`).
"""
from __future__ import annotations

from dataclasses import dataclass

CLOCK_GRANULARITY = 0.001   # G of RFC 6298 (seconds)
ALPHA, BETA = 1 / 8, 1 / 4


@dataclass(slots=True)
class RttEstimator:
    srtt: float | None = None     # SRTT (None: no measurement yet)
    rttvar: float = 0.0           # RTTVAR
    rto: float = 1.0              # RTO, within [rto_min, rto_max]
    seq: int | None = None        # timing the segment that ends here (one at a time)
    time: float = 0.0             # ... sent at this time
    latest: float = 0.0           # the last measurement
    samples: int = 0              # how many were taken

    def sample(self, r: float, rto_min: float, rto_max: float) -> None:
        """Fold one measurement `r` (seconds) into SRTT and RTTVAR, and recompute the RTO."""
        if r < 0:
            r = 0.0
        self.latest = r
        self.samples += 1
        if self.srtt is None:                     # (2.2) first measurement
            self.srtt = r
            self.rttvar = r / 2
        else:                                     # (2.3)
            self.rttvar = (1 - BETA) * self.rttvar + BETA * abs(self.srtt - r)
            self.srtt = (1 - ALPHA) * self.srtt + ALPHA * r
        self.rto = clamp_rto(self.srtt + max(CLOCK_GRANULARITY, 4 * self.rttvar), rto_min, rto_max)

    def backoff(self, rto_max: float) -> None:
        """(5.5) On expiry of the retransmission timer, double the RTO (up to rto_max)."""
        self.rto = min(self.rto * 2, rto_max)

    def start(self, seq: int, now: float) -> None:
        """Time the segment ending at `seq`, sent now."""
        self.seq = seq
        self.time = now


def clamp_rto(rto: float, rto_min: float, rto_max: float) -> float:
    return min(max(rto, rto_min), rto_max)
