"""Congestion control: the window arithmetic of a connection's sender, one object per connection
(Linux's tcp_congestion_ops, gVisor's congestionControl, smoltcp's Controller).

Loss recovery (recovery.py) decides WHAT to send when segments are lost; the
congestion control decides HOW MUCH may be in flight: how cwnd grows with each
ACK, and what ssthresh and cwnd become when a loss is detected or the
retransmission timer expires.  `tcp.congestion` chooses one for every new
connection, TCP_CONGESTION per socket.
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


CONTROLS: dict[str, type[CongestionControl]] = {cls.name: cls for cls in (NewReno,)}


def make(name: str) -> CongestionControl:
    """A new congestion control by its name (KeyError for an unknown one)."""
    return CONTROLS[name]()
