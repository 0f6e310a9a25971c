"""Congestion control: the window arithmetic of a connection's sender, one object per connection
(Linux's tcp_congestion_ops, gVisor's congestionControl, smoltcp's Controller).

Loss recovery (recovery.py) decides WHAT to send when segments are lost; the
congestion control decides HOW MUCH may be in flight: how cwnd grows with each
ACK, and what ssthresh and cwnd become when a loss is detected or the
retransmission timer expires.  `tcp.congestion` chooses one for every new
connection (CUBIC by default, as Linux), TCP_CONGESTION per socket.
"""
from __future__ import annotations


class CongestionControl:
    """The interface.  `conn` is the connection (cwnd, ssthresh, send_mss, snd_una, snd_max)."""
    name = ""

    def on_ack(self, conn, acked: int, now: float) -> None:
        """`acked` new bytes were acknowledged while cwnd limited the sender, out of recovery."""
        raise NotImplementedError

    def on_loss(self, conn, now: float) -> None:
        """Duplicate ACKs or the SACK scoreboard say a segment was lost: set ssthresh (the
        multiplicative decrease); the loss recovery then sets cwnd from it."""
        raise NotImplementedError

    def on_rto(self, conn, now: float) -> None:
        """The retransmission timer expired: ssthresh and the loss window (RFC 5681 3.1)."""
        raise NotImplementedError

    def on_recovery_exit(self, conn, now: float) -> None:
        """A full ACK ended fast recovery: cwnd deflates."""
        raise NotImplementedError


class NewReno(CongestionControl):
    """RFC 5681 with Appropriate Byte Counting (RFC 3465, L = 2) and RFC 6582's exit."""
    name = "reno"
    __slots__ = ("ca_acked",)

    def __init__(self) -> None:
        self.ca_acked = 0          # bytes acknowledged toward the next cwnd increase (avoidance)

    def on_ack(self, conn, acked: int, now: float) -> None:
        mss = conn.send_mss
        if conn.cwnd < conn.ssthresh:                  # slow start
            conn.cwnd += acked if acked < 2 * mss else 2 * mss
        else:                                          # congestion avoidance: one MSS per window
            self.ca_acked += acked
            if self.ca_acked >= conn.cwnd:
                self.ca_acked -= conn.cwnd
                conn.cwnd += mss

    def on_loss(self, conn, now: float) -> None:
        flight = (conn.snd_max - conn.snd_una) & 0xFFFFFFFF
        conn.ssthresh = max(flight // 2, 2 * conn.send_mss)       # RFC 5681 (4)

    def on_rto(self, conn, now: float) -> None:
        self.on_loss(conn, now)
        conn.cwnd = conn.send_mss                      # the loss window
        self.ca_acked = 0

    def on_recovery_exit(self, conn, now: float) -> None:
        flight = (conn.snd_max - conn.snd_una) & 0xFFFFFFFF
        conn.cwnd = min(conn.ssthresh, flight + conn.send_mss)    # RFC 6582 3.2 step 3


class Cubic(CongestionControl):
    """CUBIC (RFC 9438), Linux's default: after a loss the window grows as a cubic function of
    the time since it, concave up to the window where the loss happened (W_max), then convex
    beyond it, so that it regains its old size quickly and probes gently around it, whatever the
    round-trip time.  A Reno-friendly estimate (W_est) keeps it no slower than NewReno where the
    RTT is short.  Windows are in segments (floats) inside, cwnd in bytes outside."""
    name = "cubic"
    C = 0.4                                  # RFC 9438 4.1
    BETA = 0.7                               # beta_cubic: the window after a loss
    ALPHA = 3 * (1 - BETA) / (1 + BETA)      # alpha_cubic: W_est's growth per RTT
    __slots__ = ("w_max", "k", "epoch", "w_est", "carry")

    def __init__(self) -> None:
        self.w_max = 0.0           # segments: the window when the last loss happened
        self.k = 0.0               # seconds from the epoch until the window is back at w_max
        self.epoch: float | None = None   # when the current congestion-avoidance period began
        self.w_est = 0.0           # segments: what NewReno would have by now (4.3)
        self.carry = 0.0           # bytes of increase not yet whole

    def on_ack(self, conn, acked: int, now: float) -> None:
        mss = conn.send_mss
        if conn.cwnd < conn.ssthresh:                  # slow start, as NewReno's
            conn.cwnd += acked if acked < 2 * mss else 2 * mss
            return
        cwnd = conn.cwnd / mss
        if self.epoch is None:                         # 4.2: a new congestion-avoidance period
            self.epoch = now
            if self.w_max > cwnd:
                self.k = ((self.w_max - cwnd) / self.C) ** (1 / 3)
            else:
                self.k = 0.0
                self.w_max = cwnd
            self.w_est = cwnd
        rtt = conn.rtt.srtt or 0.0
        t = now - self.epoch + rtt                     # where the window should be one RTT ahead
        target = self.C * (t - self.k) ** 3 + self.w_max
        if target < cwnd:
            target = cwnd
        elif target > 1.5 * cwnd:
            target = 1.5 * cwnd
        self.w_est += self.ALPHA * (acked / mss) / cwnd            # 4.3, the Reno-friendly region
        if self.w_est > target:
            target = self.w_est
        self.carry += (target - cwnd) / cwnd * acked               # (target - cwnd) / cwnd per segment
        whole = int(self.carry)
        if whole:
            conn.cwnd += whole
            self.carry -= whole

    def on_loss(self, conn, now: float) -> None:
        mss = conn.send_mss
        cwnd = conn.cwnd / mss
        # 4.7 fast convergence: a loss below the last W_max gives bandwidth back to newer flows
        self.w_max = cwnd * (1 + self.BETA) / 2 if cwnd < self.w_max else cwnd
        conn.ssthresh = max(int(conn.cwnd * self.BETA), 2 * mss)                  # 4.6
        self.epoch = None
        self.carry = 0.0

    def on_rto(self, conn, now: float) -> None:
        self.on_loss(conn, now)                        # 4.8
        conn.cwnd = conn.send_mss

    def on_recovery_exit(self, conn, now: float) -> None:
        flight = (conn.snd_max - conn.snd_una) & 0xFFFFFFFF
        conn.cwnd = min(conn.ssthresh, flight + conn.send_mss)


CONTROLS: dict[str, type[CongestionControl]] = {cls.name: cls for cls in (Cubic, NewReno)}


def make(name: str) -> CongestionControl:
    """A new congestion control by its name (KeyError for an unknown one)."""
    return CONTROLS[name]()
