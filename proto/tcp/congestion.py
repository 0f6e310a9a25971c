"""Congestion control: the window arithmetic of a connection's sender, one object per connection
(Linux's tcp_congestion_ops, gVisor's congestionControl, smoltcp's Controller).

Loss recovery (recovery.py) decides WHAT to send when segments are lost; the
congestion control decides HOW MUCH may be in flight: how cwnd grows with each
ACK, and what ssthresh and cwnd become when a loss is detected or the
retransmission timer expires.  `tcp.congestion` chooses one for every new
connection (CUBIC by default, as Linux), TCP_CONGESTION per socket.
"""
from __future__ import annotations

INF = float("inf")
INITIAL_SSTHRESH = 1 << 30       # "infinite" until the first loss (handshake.enter_established)


class HyStart:
    """HyStart++ (RFC 9406): leave slow start before it overshoots.  Within each round trip the
    first RTT samples give the round's minimum; when it has grown by a clamped eighth over the
    last round's, the queue is filling: Conservative Slow Start (a quarter of the growth) for a
    few rounds, back to slow start if the RTT falls again, else on to congestion avoidance
    (ssthresh = cwnd).  Needs several RTT samples a round: with timestamps every ACK is one."""
    MIN_RTT_THRESH, MAX_RTT_THRESH, MIN_RTT_DIVISOR = 0.004, 0.016, 8
    N_RTT_SAMPLE, CSS_GROWTH_DIVISOR, CSS_ROUNDS = 8, 4, 5
    __slots__ = ("window_end", "last_min", "current_min", "count", "seen", "css_baseline", "css_rounds")

    def __init__(self) -> None:
        self.window_end: int | None = None      # the round ends when SND.UNA passes this
        self.last_min = self.current_min = INF
        self.count = 0                           # samples in this round
        self.seen = 0                            # conn.rtt.samples when last looked
        self.css_baseline = INF                  # in CSS: the round minimum that started it
        self.css_rounds = 0

    def growth(self, conn, acked: int) -> int:
        """The slow-start increase for this ACK (ABC, L = 2): all of it, a quarter in CSS, or 0
        with ssthresh set to cwnd when CSS is over."""
        mss = conn.send_mss
        increase = acked if acked < 2 * mss else 2 * mss
        if conn.ssthresh != INITIAL_SSTHRESH:
            return increase                     # only the initial slow start (4.3): after a loss, standard
        una = conn.snd_una
        if self.window_end is None or ((una - self.window_end) & 0xFFFFFFFF) < 0x80000000:
            self.window_end = conn.snd_max                  # a new round
            self.last_min, self.current_min, self.count = self.current_min, INF, 0
            if self.css_baseline < INF:
                self.css_rounds += 1
                if self.css_rounds >= self.CSS_ROUNDS:      # CSS lasted: congestion avoidance
                    conn.ssthresh = conn.cwnd
                    self.css_baseline = INF
                    return 0
        rtt = conn.rtt
        if rtt.samples != self.seen:
            self.seen = rtt.samples
            if rtt.latest < self.current_min:
                self.current_min = rtt.latest
            self.count += 1
        if self.css_baseline < INF:
            if self.current_min < self.css_baseline:       # a false alarm: back to slow start
                self.css_baseline = INF
                return increase
            return increase // self.CSS_GROWTH_DIVISOR
        if self.count >= self.N_RTT_SAMPLE and self.last_min < INF and self.current_min < INF:
            thresh = min(max(self.last_min / self.MIN_RTT_DIVISOR, self.MIN_RTT_THRESH), self.MAX_RTT_THRESH)
            if self.current_min >= self.last_min + thresh:   # the delay grows: the queue fills
                self.css_baseline = self.current_min
                self.css_rounds = 0
                return increase // self.CSS_GROWTH_DIVISOR
        return increase


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
    __slots__ = ("ca_acked", "hystart")

    def __init__(self) -> None:
        self.ca_acked = 0          # bytes acknowledged toward the next cwnd increase (avoidance)
        self.hystart = HyStart()

    def on_ack(self, conn, acked: int, now: float) -> None:
        mss = conn.send_mss
        if conn.cwnd < conn.ssthresh:                  # slow start (HyStart++ may end it early)
            conn.cwnd += self.hystart.growth(conn, acked)
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
    __slots__ = ("w_max", "k", "epoch", "w_est", "carry", "hystart")

    def __init__(self) -> None:
        self.hystart = HyStart()
        self.w_max = 0.0           # segments: the window when the last loss happened
        self.k = 0.0               # seconds from the epoch until the window is back at w_max
        self.epoch: float | None = None   # when the current congestion-avoidance period began
        self.w_est = 0.0           # segments: what NewReno would have by now (4.3)
        self.carry = 0.0           # bytes of increase not yet whole

    def on_ack(self, conn, acked: int, now: float) -> None:
        mss = conn.send_mss
        if conn.cwnd < conn.ssthresh:                  # slow start, as NewReno's (and HyStart++)
            conn.cwnd += self.hystart.growth(conn, acked)
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
