"""The congestion control interface and NewReno behind it, on a bare connection record."""
from __future__ import annotations

import pytest

from proto.tcp.congestion import CONTROLS, CongestionControl, Cubic, NewReno, make
from proto.tcp.connection import Connection

MSS = 1000


def conn(cwnd=10 * MSS, ssthresh=1 << 30, flight=0) -> Connection:
    c = Connection(1, cwnd=cwnd, ssthresh=ssthresh, send_mss=MSS)
    c.snd_una, c.snd_max = 5000, 5000 + flight
    return c


def test_every_control_implements_the_interface_and_is_made_by_name():
    for name, cls in CONTROLS.items():
        cc = make(name)
        assert isinstance(cc, CongestionControl) and cc.name == name
        for method in ("on_ack", "on_loss", "on_rto", "on_recovery_exit"):
            assert getattr(type(cc), method) is not getattr(CongestionControl, method)
    with pytest.raises(KeyError):
        make("vegas")


def test_newreno_slow_start_counts_bytes_up_to_two_segments_an_ack():
    c, cc = conn(), NewReno()
    cc.on_ack(c, 500, 0.0)
    assert c.cwnd == 10 * MSS + 500
    cc.on_ack(c, 5 * MSS, 0.0)                 # ABC, L = 2
    assert c.cwnd == 12 * MSS + 500


def test_newreno_congestion_avoidance_adds_one_segment_a_window():
    c, cc = conn(cwnd=4 * MSS, ssthresh=4 * MSS), NewReno()
    for _ in range(3):
        cc.on_ack(c, MSS, 0.0)
    assert c.cwnd == 4 * MSS
    cc.on_ack(c, MSS, 0.0)
    assert c.cwnd == 5 * MSS


def test_newreno_loss_halves_the_flight_and_rto_leaves_one_segment():
    c, cc = conn(flight=20 * MSS), NewReno()
    cc.on_loss(c, 0.0)
    assert c.ssthresh == 10 * MSS and c.cwnd == 10 * MSS          # cwnd is the recovery's to set
    c2 = conn(flight=3 * MSS)
    cc.on_rto(c2, 0.0)
    assert c2.ssthresh == 2 * MSS and c2.cwnd == MSS              # never below two segments


def test_newreno_recovery_exit_deflates_to_ssthresh_or_the_flight():
    c, cc = conn(cwnd=30 * MSS, ssthresh=10 * MSS, flight=4 * MSS), NewReno()
    cc.on_recovery_exit(c, 0.0)
    assert c.cwnd == 5 * MSS                   # min(ssthresh, flight + MSS), RFC 6582


# ---------------------------------------------------------------- CUBIC (RFC 9438)
def cubic_after_loss(cwnd_segments=100):
    c, cc = conn(cwnd=cwnd_segments * MSS), Cubic()
    c.ssthresh = 1                              # in congestion avoidance
    cc.on_loss(c, 0.0)
    c.cwnd = c.ssthresh                         # what the recovery does with it
    return c, cc


def test_cubic_loss_keeps_seventy_percent_and_remembers_w_max():
    c, cc = cubic_after_loss(100)
    assert c.ssthresh == 70 * MSS and cc.w_max == 100
    cc.on_loss(c, 1.0)                          # another loss below W_max: fast convergence (4.7)
    assert cc.w_max == pytest.approx(70 * 1.7 / 2)


def test_cubic_grows_concave_back_to_w_max_at_k_then_convex_beyond():
    c, cc = cubic_after_loss(100)
    c.rtt.srtt = 0.0                            # (the target is the window one RTT ahead)
    k = ((100 - 70) / 0.4) ** (1 / 3)           # 4.2: K = cbrt(W_max (1 - beta) / C) = 4.2 s
    sizes, t = {}, 0.0
    while t < 2 * k:
        cc.on_ack(c, c.cwnd // 10, t)           # ten ACKs a window, every 10 ms
        t = round(t + 0.01, 2)
        sizes[t] = c.cwnd / MSS
    assert cc.k == pytest.approx(k)
    early = sizes[1.0] - sizes[0.5]
    late = sizes[round(k - 0.5, 2)] - sizes[round(k - 1.0, 2)]
    assert early > late > 0                     # concave: fast at first, slow near W_max
    assert sizes[round(k, 2)] == pytest.approx(100, abs=2)       # back at W_max at K
    assert sizes[round(2 * k, 2)] > 100 + 0.4 * k ** 3 * 0.9     # convex beyond: C (t - K)^3 more


def test_cubic_is_never_slower_than_reno_where_the_rtt_is_short():
    c, cc = cubic_after_loss(10)
    c.rtt.srtt = 0.001
    for i in range(2000):                       # 2,000 one-segment ACKs within 0.2 s: Reno's pace
        cc.on_ack(c, MSS, i * 0.0001)
    assert cc.w_est > 7 and c.cwnd / MSS == pytest.approx(cc.w_est, rel=0.05)


# ---------------------------------------------------------------- HyStart++ (RFC 9406)
def slow_start_rounds(rtts_ms, control=NewReno):
    """Slow start through rounds of ten ACKs, each ACK an RTT sample of the round's value."""
    c, cc = conn(cwnd=10 * MSS, flight=10 * MSS), control()
    grown = []
    for rtt_ms in rtts_ms:
        before = c.cwnd
        end = c.snd_max
        for _ in range(10):
            c.snd_una = (c.snd_una + MSS) & 0xFFFFFFFF
            c.rtt.sample(rtt_ms / 1000, 0.2, 60)
            cc.on_ack(c, MSS, 0.0)
            if c.cwnd >= c.ssthresh:
                break
        c.snd_max = (end + c.cwnd) & 0xFFFFFFFF          # the next round's flight
        c.snd_una = end
        grown.append(c.cwnd - before)
    return c, cc, grown


@pytest.mark.parametrize("control", [NewReno, Cubic])
def test_hystart_leaves_slow_start_when_the_delay_grows(control):
    c, cc, grown = slow_start_rounds([10, 10, 30, 30, 30, 30, 30, 30, 30], control)
    assert grown[1] == 10 * MSS                            # slow start: one MSS an ACK
    assert 0 < grown[2] < 10 * MSS                         # RTT +20 ms >= 10 + 4 ms: CSS, a quarter
    assert c.ssthresh != 1 << 30 and c.cwnd >= c.ssthresh  # after CSS_ROUNDS: congestion avoidance


def test_hystart_resumes_slow_start_after_a_false_alarm_and_ignores_noise():
    c, cc, grown = slow_start_rounds([10, 10, 30, 8, 8])
    assert grown[2] < 10 * MSS and grown[4] == 10 * MSS   # the RTT fell below the baseline: back
    c, cc, grown = slow_start_rounds([10, 10, 12, 13, 12])   # +2-3 ms: below the 4 ms floor
    assert grown == [10 * MSS] * 5 and c.ssthresh == 1 << 30
