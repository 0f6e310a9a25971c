"""The congestion control interface and NewReno behind it, on a bare connection record."""
from __future__ import annotations

import pytest

from proto.tcp.congestion import CONTROLS, CongestionControl, NewReno, make
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
