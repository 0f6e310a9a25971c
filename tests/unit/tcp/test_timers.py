"""The timers: retransmission (RFC 6298), persist, keepalive, delayed ACK, and the timer protocol."""
import errno

import pytest

from proto.tcp import seqnum
from proto.tcp.connection import Connection
from proto.tcp.state import State

from .factory import ACK, RST, established


# ---------------------------------------------------------------- RFC 6298
def test_rtt_estimator_rfc6298():
    c = Connection(1)
    c.rtt.sample(0.5, 0.2, 60)
    assert c.rtt.srtt == 0.5 and c.rtt.rttvar == 0.25 and c.rtt.rto == pytest.approx(1.5)
    c.rtt.sample(0.1, 0.2, 60)
    assert c.rtt.rttvar == pytest.approx(0.75 * 0.25 + 0.25 * 0.4)
    assert c.rtt.srtt == pytest.approx(0.875 * 0.5 + 0.125 * 0.1)
    assert c.rtt.rto == pytest.approx(c.rtt.srtt + 4 * c.rtt.rttvar)


def test_rto_clamped_to_bounds():
    c = Connection(1)
    c.rtt.sample(0.001, 1.0, 64)
    assert c.rtt.rto == 1.0
    c.rtt.sample(100, 1.0, 64)
    assert c.rtt.rto == 64
    c.rtt.backoff(64)
    assert c.rtt.rto == 64


def test_rtt_measured_on_data_and_karn_skips_retransmissions():
    eng, sid, peer = established()
    conn = peer.conn
    assert conn.rtt.srtt == 0.0                      # the handshake was instantaneous
    peer.call("send", sid, b"a" * 100)
    peer.take()
    peer.advance(0.3)
    peer.send(ACK)
    assert conn.rtt.srtt == pytest.approx(0.125 * 0.3)
    conn.rtt.srtt = None
    peer.call("send", sid, b"b" * 100)
    peer.take()
    peer.run_timer("retransmit")                 # retransmitted: its ACK is not a sample
    peer.take()
    peer.advance(0.1)
    peer.send(ACK)
    assert conn.rtt.srtt is None


def test_retransmission_timer_backoff_and_give_up():
    eng, sid, peer = established(max_retries=3)
    conn = peer.conn
    peer.call("send", sid, b"lost")
    first = peer.take_one()
    start = peer.now
    times = []
    while conn.state is State.ESTABLISHED:
        peer.advance(0.25)
        for seg in peer.take():
            assert seg.seq == first.seq and seg.payload == b"lost"
            times.append(peer.now - start)
    assert times == pytest.approx([1, 3, 7])         # RTO 1, 2, 4 s, three retransmissions
    assert peer.now - start == pytest.approx(15, abs=0.3)    # the fourth expiry (8 s later) gives up
    assert conn.state is State.CLOSED
    assert peer.transitions[-1].cause == "retransmission timeout"
    assert peer.error_of("recv", sid, 10) == errno.ETIMEDOUT
    assert peer.error_of("send", sid, b"x") == errno.EPIPE
    assert eng.counters["retrans_segs"] == 3 and eng.counters["timeouts"] == 1


def test_rto_doubles_up_to_rto_max():
    eng, sid, peer = established(rto_max=4.0, max_retries=10)
    peer.call("send", sid, b"x")
    for _ in range(5):
        peer.run_timer("retransmit")
    assert peer.conn.rtt.rto == 4.0


def test_rto_resets_cwnd_to_one_segment_and_goes_back():
    eng, sid, peer = established(peer_kwargs={"mss": 1000}, congestion="reno")
    conn = peer.conn
    peer.call("send", sid, b"x" * 5000)
    segs = peer.take()
    assert len(segs) == 5
    peer.run_timer("retransmit")
    re = peer.take_one()
    assert re.seq == segs[0].seq and len(re.payload) == 1000
    assert conn.cwnd == 1000 and conn.ssthresh == 2500
    peer.send(ACK, ack=segs[1].seq)                 # slow start resumes from the loss
    assert [s.seq for s in peer.take()] == [segs[1].seq, segs[2].seq]


def test_retransmit_timer_cancelled_when_all_acked_and_restarted_on_progress():
    eng, sid, peer = established()
    conn = peer.conn
    peer.call("send", sid, b"x" * 3000)
    segs = peer.take()
    assert conn.timers["retransmit"] == pytest.approx(peer.now + 1.0)
    peer.advance(0.5)
    peer.send(ACK, ack=segs[1].seq)
    assert conn.timers["retransmit"] == pytest.approx(peer.now + 1.0)
    peer.send(ACK)
    assert conn.timers["retransmit"] is None
    assert (conn.id, "retransmit") not in eng.armed_timers()


# ---------------------------------------------------------------- delayed ACK
def test_delayed_ack_fires_after_at_most_config_delay():
    eng, sid, peer = established(delayed_ack=0.03, quickacks=0)
    peer.send(ACK, b"x")
    peer.advance(0.029)
    peer.expect_nothing()
    peer.advance(0.002)
    assert peer.take_one().ack == peer.seq


def test_delayed_ack_piggybacked_on_data_cancels_timer():
    eng, sid, peer = established(quickacks=0)
    peer.send(ACK, b"request")
    peer.call("send", sid, b"response")
    seg = peer.take_one()
    assert seg.payload == b"response" and seg.ack == peer.seq
    assert peer.conn.timers["delayed_ack"] is None
    peer.send(ACK)                                      # the peer ACKs the response
    peer.advance(1)
    peer.expect_nothing()                               # no stray delayed ACK later
    assert eng.counters["delayed_acks"] == 0


# ---------------------------------------------------------------- persist
def test_zero_window_probes_with_backoff_and_resume():
    eng, sid, peer = established()
    conn = peer.conn
    peer.call("send", sid, b"x" * 100)
    peer.take()
    peer.send(ACK, window=0)
    peer.call("send", sid, b"y" * 100)
    peer.expect_nothing()
    assert conn.timers["persist"] == pytest.approx(peer.now + 1.0)
    assert conn.timers["retransmit"] is None
    peer.run_timer("persist")
    probe = peer.take_one()
    assert probe.flags == ACK and probe.seq == conn.snd_una - 1 and probe.payload == b""
    assert eng.counters["window_probes"] == 1
    peer.send(ACK, window=0)                        # answered, still zero
    peer.run_timer("persist")
    assert peer.take_one().seq == conn.snd_una - 1
    assert conn.persist_backoff == 2
    peer.send(ACK, window=1000)                     # opens: the data goes at once
    seg = peer.take_one()
    assert seg.payload == b"y" * 100
    assert conn.timers["persist"] is None


def test_lost_window_update_recovered_by_probe():
    eng, sid, peer = established()
    peer.send(ACK, window=0)
    peer.call("send", sid, b"data")
    peer.expect_nothing()
    peer.window = 5000                              # the update that would say so is "lost"
    peer.run_timer("persist")
    probe = peer.take_one()
    assert probe.seq == peer.conn.snd_una - 1 and not probe.payload
    peer.send(ACK)                                  # the answer to the probe carries the open window
    assert peer.take_one().payload == b"data"


def test_persist_does_not_give_up_while_answered():
    eng, sid, peer = established(max_retries=3)
    peer.send(ACK, window=0)
    peer.call("send", sid, b"data")
    for _ in range(10):
        peer.run_timer("persist")
        peer.take()
        peer.send(ACK, window=0)
    assert peer.conn.state is State.ESTABLISHED


def test_persist_gives_up_when_unanswered():
    eng, sid, peer = established(max_retries=3)
    peer.send(ACK, window=0)
    peer.call("send", sid, b"data")
    for _ in range(4):
        peer.run_timer("persist")
    assert peer.conn.state is State.CLOSED
    assert peer.error_of("recv", sid, 1) == errno.ETIMEDOUT


# ---------------------------------------------------------------- keepalive
def keepalive_setup(**kw):
    eng, sid, peer = established(keepalive_time=100, keepalive_interval=10, keepalive_probes=3, **kw)
    peer.call("setsockopt", sid, 1, 9, 1)
    return eng, sid, peer


def test_keepalive_off_by_default():
    eng, sid, peer = established()
    assert peer.conn.timers["keepalive"] is None
    peer.advance(10_000)
    peer.expect_nothing()


def test_keepalive_probe_after_idle_and_answer_resets():
    eng, sid, peer = keepalive_setup()
    conn = peer.conn
    assert conn.timers["keepalive"] == pytest.approx(peer.now + 100)
    peer.advance(100)
    probe = peer.take_one()
    assert probe.flags == ACK and probe.seq == conn.snd_una - 1 and not probe.payload
    peer.send(ACK)                                   # the peer answers
    peer.advance(99)
    peer.expect_nothing()
    peer.advance(1.1)
    assert peer.take_one().seq == conn.snd_una - 1


def test_keepalive_gives_up_after_probes_with_rst_and_etimedout():
    eng, sid, peer = keepalive_setup()
    peer.advance(100)
    peer.advance(10)
    peer.advance(10)
    probes = peer.take()
    assert len(probes) == 3
    peer.advance(10)
    rst = peer.take_one()
    assert rst.flags & RST
    assert peer.conn.state is State.CLOSED
    assert peer.error_of("recv", sid, 1) == errno.ETIMEDOUT
    assert eng.counters["keepalive_timeouts"] == 1


def test_keepalive_idle_measured_from_last_segment():
    eng, sid, peer = keepalive_setup()
    peer.advance(60)
    peer.send(ACK, b"hi")
    peer.advance(0.2)
    assert peer.take_one().ack == peer.seq          # the delayed ACK of "hi"
    peer.advance(49.8)                              # 110 s since start, 50 since traffic: no probe
    peer.expect_nothing()
    peer.advance(50.1)
    probe = peer.take_one()
    assert probe.seq == peer.conn.snd_una - 1 and not probe.payload


def test_keepalive_socket_options():
    eng, sid, peer = established()
    peer.call("setsockopt", sid, 6, 4, 5)           # TCP_KEEPIDLE
    peer.call("setsockopt", sid, 6, 5, 2)           # TCP_KEEPINTVL
    peer.call("setsockopt", sid, 6, 6, 1)           # TCP_KEEPCNT
    peer.call("setsockopt", sid, 1, 9, 1)
    peer.advance(5)
    assert len(peer.take()) == 1
    peer.advance(2)
    peer.advance(0.01)
    assert peer.take()[-1].flags & RST


def test_keepalive_switched_off():
    eng, sid, peer = keepalive_setup()
    peer.call("setsockopt", sid, 1, 9, 0)
    peer.advance(1000)
    peer.expect_nothing()


# ---------------------------------------------------------------- the timer protocol
def test_stale_unknown_and_duplicate_fires_are_tolerated():
    eng, sid, peer = established()
    eng.timer_fired(peer.now, (9999, "retransmit"))
    eng.timer_fired(peer.now, (sid, "no-such-kind"))
    eng.timer_fired(peer.now, "garbage")
    eng.timer_fired(peer.now, (sid, "retransmit"))          # not running
    peer.call("send", sid, b"x")
    peer.take()
    d = peer.conn.timers["retransmit"]
    eng.timer_fired(peer.now + 0.5, (sid, "retransmit"))    # early: re-armed, nothing sent
    eff = eng.take_effects()
    assert eff.segments == [] and eff.timers == [((sid, "retransmit"), d)]
    eng.timer_fired(d, (sid, "retransmit"))
    eng.timer_fired(d, (sid, "retransmit"))                 # delivered twice: the second is stale
    eff = eng.take_effects()
    assert len(eff.segments) == 1
    assert eng.counters["timer_stale"] >= 3 and eng.counters["timer_bad_key"] == 1


def test_late_fire_still_works():
    eng, sid, peer = established()
    peer.call("send", sid, b"x")
    peer.take()
    eng.timer_fired(peer.now + 5, (sid, "retransmit"))
    assert len(eng.take_effects().segments) == 1


def test_moving_a_timer_later_sends_no_timer_message_until_it_fires():
    eng, sid, peer = established()
    peer.call("send", sid, b"x" * 3000)
    peer.take()
    eng.take_effects()
    peer.advance(0.5)
    peer.send(ACK, ack=peer.ack - 1000)                     # progress: retransmit deadline moves later
    assert peer.conn.timers["retransmit"] == pytest.approx(peer.now + 1)
    assert not any(k == (sid, "retransmit") for k, _ in eng.take_effects().timers)


def test_armed_timers_lists_running_timers_with_deadlines():
    eng, sid, peer = established(keepalive_time=50)
    peer.call("setsockopt", sid, 1, 9, 1)
    peer.call("send", sid, b"x")
    armed = eng.armed_timers()
    assert armed[(sid, "retransmit")] == pytest.approx(peer.now + 1)
    assert armed[(sid, "keepalive")] == pytest.approx(peer.now + 50)
    assert (sid, "connect") not in armed


def test_closed_connection_cancels_its_timers():
    eng, sid, peer = established()
    peer.call("send", sid, b"x")
    peer.take()
    peer.send(RST)
    assert (sid, "retransmit") not in peer.timers           # explicit cancel sent to the service
    assert eng.armed_timers() == {}


def test_pure_acks_after_go_back_carry_the_highest_sequence_sent():
    """After an RTO moves snd_nxt back, a pure ACK must not carry a sequence number the peer
    has already passed (it would be dropped as unacceptable: both ends could stall)."""
    eng, sid, peer = established(peer_kwargs={"mss": 1000})
    conn = peer.conn
    peer.call("send", sid, b"x" * 4000)
    peer.take()
    peer.run_timer("retransmit")
    peer.take()
    assert conn.snd_nxt != conn.snd_max
    peer.send(ACK, b"data", ack=conn.snd_una)          # ACK lost earlier; the peer sends data
    peer.advance(0.2)
    ack = [s for s in peer.take() if not s.payload][-1]
    assert ack.seq == conn.snd_max


# ---------------------------------------------------------------- the timer protocol
def test_a_short_connection_ends_without_stale_fires():
    """The TIME_WAIT timer's message cancels the lazily cancelled timers of its connection,
    so connect, echo, close and TIME_WAIT fire only TIME_WAIT."""
    from proto.tcp.engine import TcpError
    from .link import ADDR_A, ADDR_B, Link
    link = Link(delay=0.0001)
    fired = []
    timer_fired = link.a.timer_fired
    link.a.timer_fired = lambda now, key: (fired.append(key[1]), timer_fired(now, key))
    listener = link.call(ADDR_B, "socket")
    link.call(ADDR_B, "bind", listener, "0.0.0.0", 80)
    link.call(ADDR_B, "listen", listener, 5)
    client = link.call(ADDR_A, "socket")
    with pytest.raises(TcpError):
        link.call(ADDR_A, "connect", client, ADDR_B, 80)             # EINPROGRESS
    link.run(duration=0.01)
    server, _ = link.call(ADDR_B, "accept", listener)
    link.call(ADDR_A, "send", client, b"x")
    link.run(duration=0.001)
    link.call(ADDR_B, "send", server, link.call(ADDR_B, "recv", server, 10))
    link.run(duration=0.001)
    assert link.call(ADDR_A, "recv", client, 10) == b"x"
    link.call(ADDR_A, "close", client)
    link.run(duration=0.001)
    link.call(ADDR_B, "close", server)
    link.run(duration=130)
    assert fired == ["time_wait"]
    assert link.a.counters.get("timer_stale", 0) == 0


# ---------------------------------------------------------------- a peer whose window shrank (Linux 6.x checks)

def _window_shrunk_below_what_is_in_flight():
    """3000 bytes in flight, then the peer acknowledges nothing new and offers only 500: our
    snd_max is 2500 bytes past the right edge of its window."""
    eng, sid, peer = established(peer_kwargs={"mss": 1000})
    conn = peer.conn
    una = conn.snd_una
    peer.call("send", sid, b"x" * 3000)
    assert len(peer.take()) == 3
    peer.send(ACK, ack=una, window=500)
    return eng, sid, peer, conn, una


def test_an_ack_never_carries_a_sequence_number_past_the_peer_s_window():
    """Linux tcp_acceptable_seq: SND.UNA + SND.WND at most.  A newer Linux drops a segment that
    ends past its window when its buffer is full, ACK and window unread: with snd_max there,
    neither side would ever hear the other again."""
    eng, sid, peer, conn, una = _window_shrunk_below_what_is_in_flight()
    peer.send(ACK, b"data", ack=una, window=500)                  # data from the peer: we must ACK it
    peer.advance(1.0)                                              # past any delayed ACK
    acks = [s for s in peer.take() if not s.payload]
    assert acks and all(s.seq == (una + 500) & seqnum.MASK for s in acks)


def test_a_retransmission_fits_the_window_offered():
    """Linux tcp_retransmit_skb: a full segment into a 500-byte window would be dropped whole."""
    eng, sid, peer, conn, una = _window_shrunk_below_what_is_in_flight()
    peer.run_timer("retransmit")
    again = peer.take()[0]
    assert again.seq == una and len(again.payload) == 500
