"""When the engine acknowledges (delack.py): quick ACKs, the adaptive timeout, interactive
connections, the ACK a read makes due, the waiting reader, TCP_QUICKACK."""
from __future__ import annotations

import errno

import pytest

from proto.tcp.delack import ATO_MIN

from .factory import ACK, PSH, established

IPPROTO_TCP, TCP_QUICKACK = 6, 12


def test_quick_acks_at_the_start_then_delayed():
    eng, sid, peer = established(quickacks=2)
    for _ in range(2):
        peer.send(ACK, b"q" * 100)
        assert peer.take_one().ack == peer.seq          # quick-ACK mode: at once
    peer.send(ACK, b"d" * 100)
    peer.expect_nothing()                               # quick ACKs used up: delayed
    assert peer.deadline("delayed_ack") is not None


def test_a_long_silence_brings_quick_acks_back():
    eng, sid, peer = established(quickacks=2)
    for _ in range(3):
        peer.send(ACK, b"x" * 100)
    peer.take()
    peer.advance(5)                                     # longer than the RTO: idle
    peer.take()
    peer.send(ACK, b"y" * 100)
    assert peer.take_one().ack == peer.seq


def test_the_delay_adapts_to_the_arrivals_within_the_configured_bound():
    eng, sid, peer = established(quickacks=0, delayed_ack=0.2)
    peer.send(ACK, b"a")
    assert peer.deadline("delayed_ack") - peer.now == pytest.approx(ATO_MIN)
    peer.advance(ATO_MIN)                               # fired: not interactive, so ato doubles
    peer.take()
    assert peer.conn.acks.ato == pytest.approx(2 * ATO_MIN)
    peer.advance(0.01)
    peer.send(ACK, b"b")                                # 50 ms since "a", less than ato: ato/2 + gap
    assert peer.conn.acks.ato == pytest.approx(ATO_MIN + 0.05)
    assert peer.deadline("delayed_ack") - peer.now <= 0.2


def test_reading_a_pushed_segment_to_the_end_acks_at_once():
    eng, sid, peer = established(quickacks=0)
    peer.send(ACK | PSH, b"headers")
    peer.expect_nothing()
    assert peer.call("recv", sid, 100) == b"headers"
    assert peer.take_one().ack == peer.seq              # tcp_cleanup_rbuf
    assert eng.counters["acks_after_read"] == 1


def test_a_reader_that_waits_gets_the_pending_ack_out():
    eng, sid, peer = established(quickacks=0)
    eng.conns[sid].acks.pingpong = True                 # interactive: the read alone would not ACK
    peer.send(ACK | PSH, b"headers")
    assert peer.call("recv", sid, 100) == b"headers"
    peer.expect_nothing()
    assert peer.error_of("recv", sid, 100) == errno.EAGAIN     # ... and now waits for more
    assert peer.take_one().ack == peer.seq
    assert eng.counters["acks_for_waiting_reader"] == 1


def test_a_reply_soon_after_a_request_makes_the_connection_interactive():
    eng, sid, peer = established(quickacks=0)
    peer.send(ACK, b"request")
    peer.call("send", sid, b"response")                 # carries the ACK
    assert peer.take_one().ack == peer.seq
    assert peer.conn.acks.pingpong
    peer.send(ACK, b"request 2")
    peer.expect_nothing()
    peer.advance(peer.deadline("delayed_ack") - peer.now)     # no reply came: the ACK fires ...
    assert peer.take_one().ack == peer.seq
    assert not peer.conn.acks.pingpong and peer.conn.acks.ato == ATO_MIN   # ... and ends pingpong


def test_tcp_quickack():
    eng, sid, peer = established(quickacks=0)
    assert peer.call("getsockopt", sid, IPPROTO_TCP, TCP_QUICKACK) == 1
    peer.call("setsockopt", sid, IPPROTO_TCP, TCP_QUICKACK, 0)
    assert peer.call("getsockopt", sid, IPPROTO_TCP, TCP_QUICKACK) == 0
    peer.send(ACK, b"x")
    peer.expect_nothing()
    peer.call("setsockopt", sid, IPPROTO_TCP, TCP_QUICKACK, 1)      # the pending ACK goes now
    assert peer.take_one().ack == peer.seq
