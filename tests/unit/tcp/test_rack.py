"""RACK time-based loss detection (RFC 8985 6, rack.py) on the pure engine with a fake clock:
reordering within the reordering window is waited out, a loss with a single segment SACKed above
it is found by the reordering timer, a lost retransmission is found by time, `tcp.rack` off
leaves the duplicate-ACK rule alone."""
import pytest

from proto.tcp.config import TcpConfig
from proto.wire.tcp import TcpOptions

from .factory import ACK, accepted

MSS = 1000
RTT = 0.05
MASK = 0xFFFFFFFF


def _accepted(mss: int, segments: int, **config):
    """A passive SACK connection (NewReno) whose window takes `segments` segments of `mss`."""
    eng, sid, peer = accepted(mss, congestion="reno", **config)
    conn = peer.conn
    conn.cwnd = segments * mss
    conn.rtt.srtt, conn.rtt.rto = RTT, 1.0                          # the probe timer waits 2 RTT
    return eng, sid, peer, conn


def _sender(segments: int, rack: int = 1):
    """A passive SACK connection (peer MSS 1000, NewReno) with `segments` full segments in flight,
    all sent at the same instant, the peer one round trip (50 ms) later."""
    eng, sid, peer, conn = _accepted(MSS, segments, rack=rack)
    peer.call("send", sid, bytes(range(250)) * (segments * MSS // 250))
    segs = peer.take()
    assert len(segs) == segments
    peer.advance(RTT)
    return eng, sid, peer, conn, conn.snd_una


def _sacks(una: int, *ranges) -> TcpOptions:
    return TcpOptions(sack_blocks=tuple(((una + a * MSS) & MASK, (una + b * MSS) & MASK) for a, b in ranges))


def _resent(segs, below: int, una: int) -> list[int]:
    """Segment numbers (from `una`) of the retransmissions among `segs` (seq below `below`)."""
    return [((s.seq - una) & MASK) // MSS for s in segs if s.payload and ((below - s.seq) & MASK) - 1 < 1 << 31]


def test_setting_and_state():
    assert TcpConfig.from_mapping({"tcp.rack": 0}).rack == 0 and TcpConfig().rack == 1
    _, _, _, conn, _ = _sender(4)
    assert conn.rack is not None and len(conn.rack.sent) == 4
    _, _, _, off, _ = _sender(4, rack=0)
    assert off.rack is None


def test_reordering_within_the_window_is_not_a_loss():
    eng, sid, peer, conn, una = _sender(10)
    high = conn.snd_max
    peer.send(ACK, ack=una, options=_sacks(una, (1, 2)))          # segment 1 overtook segment 0
    assert _resent(peer.take(), high, una) == []
    rk = conn.rack
    assert rk.rtt == pytest.approx(RTT) and rk.timeout == pytest.approx(peer.now + RTT / 4)
    assert conn.reo_armed and peer.deadline("retransmit") == pytest.approx(rk.timeout)
    peer.advance(RTT / 8)                                          # ... and arrives within a quarter RTT
    peer.send(ACK, ack=una + 2 * MSS)
    assert rk.reord                                                # reordering seen (RACK.reordering_seen)
    peer.advance(RTT)
    assert _resent(peer.take(), high, una) == []
    assert eng.counters["retrans_segs"] == 0 and eng.counters["rack_marked_lost"] == 0


def test_one_segment_sacked_above_a_loss_the_reordering_timer_resends_it():
    eng, sid, peer, conn, una = _sender(10)
    high = conn.snd_max
    peer.send(ACK, ack=una, options=_sacks(una, (1, 2)))
    assert _resent(peer.take(), high, una) == []
    peer.advance(RTT / 4 + 0.001)                                  # segment 0 never comes: the timer fires
    assert _resent(peer.take(), high, una) == [0]
    assert eng.counters["rack_reo_timeouts"] == 1 and eng.counters["rack_marked_lost"] == 1
    assert eng.counters["rto_expiries"] == 0 and eng.counters["tlp_probes"] == 0


def test_without_rack_the_same_loss_waits_for_the_probe():
    eng, sid, peer, conn, una = _sender(10, rack=0)
    high = conn.snd_max
    peer.send(ACK, ack=una, options=_sacks(una, (1, 2)))
    peer.advance(RTT / 4 + 0.001)
    assert _resent(peer.take(), high, una) == []


def test_a_lost_retransmission_is_found_by_time():
    eng, sid, peer, conn, una = _sender(20)
    peer.call("send", sid, b"y" * 20 * MSS)
    high = conn.snd_max
    peer.send(ACK, ack=una, options=_sacks(una, (1, 4)))           # three SACKed: segment 0 is lost
    assert _resent(peer.take(), high, una)[:1] == [0]
    retransmitted_at = peer.now
    peer.advance(0.01)
    peer.send(ACK, ack=una, options=_sacks(una, (1, 12)))          # new data goes out as the pipe drains
    new = [s for s in peer.take() if ((s.seq - una) & MASK) >= 20 * MSS]
    assert new and 0 not in _resent(new, high, una)
    top = ((new[0].seq + len(new[0].payload) - una) & MASK) // MSS
    # the retransmission of segment 0 was lost; the peer SACKs data sent after it, one RTT later
    peer.advance(RTT)
    lost_before = eng.counters["rack_marked_lost"]
    peer.send(ACK, ack=una, options=_sacks(una, (1, 12), (20, top)))
    assert peer.now - retransmitted_at > RTT
    assert 0 in _resent(peer.take(), high, una)
    assert eng.counters["rack_marked_lost"] > lost_before and eng.counters["rto_expiries"] == 0


def test_acked_segments_leave_the_record():
    eng, sid, peer, conn, una = _sender(6)
    peer.send(ACK, ack=una + 3 * MSS)
    assert sorted((s - una) & MASK for s in conn.rack.sent) == [3 * MSS, 4 * MSS, 5 * MSS]
    peer.send(ACK, ack=conn.snd_max)
    assert not conn.rack.sent and conn.rack.rtt == pytest.approx(RTT)


def _spurious(link) -> tuple[int, int]:
    """(retransmissions, retransmissions of a segment the peer had already received) of engine a."""
    from .link import ADDR_A
    delivered, spurious, resent = set(), 0, 0
    for _, src, seg, ok in link.log:
        if src != ADDR_A or not seg.payload:
            continue
        if seg.seq in delivered:
            spurious += 1
        if ok:
            delivered.add(seg.seq)
    return link.a.counters["retrans_segs"], spurious


def test_two_engines_through_loss_rack_resends_only_what_was_lost():
    """Seeded 2 % loss both ways, 1 MiB: the data arrives whole either way; with RACK no segment
    the peer already held is sent again (the duplicate-ACK rule alone resent some 30 of them:
    a retransmission still in flight sent again on re-entering recovery)."""
    from .link import Link
    from .test_two_engines import one_way
    totals = {}
    for rack in (1, 0):
        resent = spurious = 0
        for seed in (1, 2, 3):
            link = Link(config_a={"rto_min": 0.2, "rto_initial": 0.5, "rack": rack},
                        config_b={"delayed_ack": 0.04}, seed=seed, loss=0.02, delay=0.01)
            one_way(link, 1 << 20, seed)                   # asserts the bytes arrived intact
            r, s = _spurious(link)
            resent, spurious = resent + r, spurious + s
            if rack:
                assert link.a.counters["rack_marked_lost"] > 0
        totals[rack] = (resent, spurious)
    assert totals[1][1] * 4 <= totals[0][1], totals
    assert totals[1][0] < totals[0][0], totals


def test_a_super_segment_marked_lost_resends_only_the_packets_the_peer_lacks():
    """With TSO a transmission is a super-segment of several packets; the device cuts it and one
    packet is lost: RACK marks the super-segment, what is resent is only its unSACKed part."""
    mss = 1460
    eng, sid, peer, conn = _accepted(mss, 6, gso_max_size=3 * mss)
    peer.call("send", sid, b"s" * 6 * mss)
    assert [len(s.payload) for s in peer.take()] == [3 * mss, 3 * mss]
    una, high = conn.snd_una, conn.snd_max
    peer.advance(RTT)
    # packet 0 arrived, packet 1 was lost, packets 2-5 arrived
    peer.send(ACK, ack=una + mss, options=TcpOptions(sack_blocks=((una + 2 * mss, una + 6 * mss),)))
    resent = [s for s in peer.take() if s.payload]
    assert [(s.seq - una, len(s.payload)) for s in resent] == [(mss, mss)]
    assert eng.counters["rack_marked_lost"] >= 1
    assert conn.rack.lost == []                  # nothing the peer holds is waiting to be resent


def test_a_checkpoint_keeps_that_rack_is_on_not_its_record():
    """tcpd's store (checkpoint.py) writes the control block: RACK's record of transmissions stays
    in memory; a restored connection starts it again, empty."""
    import pickle

    from proto.tcp import checkpoint
    from proto.tcp.rack import RackState
    _, _, peer, conn, _ = _sender(4)
    block = pickle.loads(pickle.dumps(checkpoint.snapshot(conn)))
    assert block["rack"] is True
    again = checkpoint.restore(block, b"", 0, b"", 0, 0, peer.now)
    assert isinstance(again.rack, RackState) and not again.rack.sent and not again.reo_armed
    _, _, peer, off, _ = _sender(4, rack=0)
    assert checkpoint.restore(checkpoint.snapshot(off), b"", 0, b"", 0, 0, peer.now).rack is None
