"""SACK as a receiver (RFC 2018): SACK-permitted in the SYNs, SACK blocks on the ACKs for out-of-order data;
limited transmit (RFC 3042) and duplicate ACKs recognised by their SACK blocks; as a sender, SACK-based
loss recovery (RFC 6675: scoreboard, IsLost, pipe, NextSeg) and the tail loss probe (RFC 8985 7)."""
import pytest

from proto.wire.tcp import TcpOptions

from .factory import ACK, SYN, accepted, established, listening, syn_sent


def test_active_syn_offers_sack_permitted():
    eng, sid, peer = syn_sent()
    assert peer.all_segments[0].options.sack_permitted


def test_synack_offers_sack_only_when_the_syn_did():
    for offered in (False, True):
        eng, sid, peer = listening()
        peer.send(SYN, options=TcpOptions(mss=1460, sack_permitted=offered))
        synack = peer.take_one()
        assert synack.options.sack_permitted is offered


def _established_with_sack(sack: bool):
    return accepted(1460, sack)


def test_out_of_order_data_is_acked_with_sack_blocks_latest_first():
    eng, sid, peer = _established_with_sack(True)
    base = peer.seq
    peer.send(ACK, b"b" * 100, seq=base + 100, advance=False)          # hole at base..base+100
    dup = peer.take_one()
    assert dup.ack == base and dup.options.sack_blocks == ((base + 100, base + 200),)
    peer.send(ACK, b"d" * 100, seq=base + 300, advance=False)
    assert peer.take_one().options.sack_blocks == ((base + 300, base + 400), (base + 100, base + 200))
    peer.send(ACK, b"c" * 100, seq=base + 200, advance=False)          # joins the two blocks
    assert peer.take_one().options.sack_blocks == ((base + 100, base + 400),)
    peer.send(ACK, b"a" * 100, seq=base, advance=False)                # fills the hole
    full = peer.take_one()
    assert full.ack == base + 400 and full.options.sack_blocks == ()
    assert peer.call("recv", sid, 1000) == b"a" * 100 + b"b" * 100 + b"c" * 100 + b"d" * 100


def test_no_sack_blocks_unless_negotiated():
    eng, sid, peer = _established_with_sack(False)
    peer.send(ACK, b"b" * 100, seq=peer.seq + 100, advance=False)
    assert peer.take_one().options.sack_blocks == ()



# ---------------------------------------------------------------- limited transmit (RFC 3042), SACK dupacks
def test_limited_transmit_sends_new_data_on_the_first_two_duplicate_acks():
    eng, sid, peer = established(peer_kwargs={"mss": 1000})
    conn = peer.conn
    peer.call("send", sid, b"x" * 30000)
    first = peer.take()
    assert sum(len(s.payload) for s in first) == conn.cwnd           # cwnd-limited
    una, cwnd = conn.snd_una, conn.cwnd
    peer.send(ACK, ack=una)                                          # duplicate ACK 1
    one = peer.take_one()
    assert one.seq == first[-1].seq + 1000 and len(one.payload) == 1000
    peer.send(ACK, ack=una)                                          # duplicate ACK 2
    two = peer.take_one()
    assert two.seq == one.seq + 1000
    assert conn.cwnd == cwnd and eng.counters["fast_retransmits"] == 0
    peer.send(ACK, ack=una)                                          # 3: fast retransmit of the head
    again = peer.take()
    assert again[0].seq == una and eng.counters["fast_retransmits"] == 1


def test_acks_reporting_new_sack_data_count_as_duplicates_even_when_the_window_moves():
    eng, sid, peer = established(peer_kwargs={"mss": 1000})
    conn = peer.conn
    peer.call("send", sid, b"x" * 30000)
    peer.take()
    una = conn.snd_una
    for i in range(1, 4):          # the window grows with each: not duplicates by RFC 5681 alone
        sack = TcpOptions(sack_blocks=((una + 1000, una + 1000 + 1000 * i),))
        peer.send(ACK, ack=una, window=peer.window - 100 * i, options=sack)
    assert eng.counters["fast_retransmits"] == 1
    assert any(s.seq == una for s in peer.take())


# ---------------------------------------------------------------- SACK-based loss recovery (RFC 6675) as a sender
from proto.tcp import scoreboard  # noqa: E402
from proto.tcp.state import State  # noqa: E402


MSS = 1000


def _sack_sender(segments: int, cwnd_segments: int | None = None, sack_ok: bool = True):
    """An established passive connection with SACK (peer MSS 1000) that has sent `segments` full
    segments, all in flight.  Returns (eng, sid, peer, conn, una, segs)."""
    eng, sid, peer = accepted(MSS, sack_ok, congestion="reno")     # RFC 6675 with NewReno's halving
    conn = peer.conn
    conn.cwnd = (cwnd_segments or segments) * MSS
    peer.call("send", sid, bytes(range(256)) * (segments * MSS // 256 + 1))
    segs = peer.take()
    una = conn.snd_una
    return eng, sid, peer, conn, una, segs


def _sacks(una: int, *ranges: tuple[int, int]) -> TcpOptions:
    """SACK blocks given in segment numbers relative to `una`: (first, last + 1)."""
    return TcpOptions(sack_blocks=tuple(((una + a * MSS) & 0xFFFFFFFF, (una + b * MSS) & 0xFFFFFFFF)
                                        for a, b in ranges))


def _dupack(peer, una, *ranges):
    peer.send(ACK, ack=una, options=_sacks(una, *ranges))


def test_scoreboard_merges_blocks_ignores_dsack_and_out_of_range_and_prunes():
    eng, sid, peer, conn, una, _ = _sack_sender(10)
    assert scoreboard.update(conn, ((una + 2000, una + 3000),)) == 1000
    assert scoreboard.update(conn, ((una + 5000, una + 6000), (una + 2500, una + 4000))) == 2000
    assert scoreboard.offsets(conn) == [(2000, 4000), (5000, 6000)]
    assert scoreboard.update(conn, ((una + 4000, una + 5000),)) == 1000               # joins the two
    assert scoreboard.offsets(conn) == [(2000, 6000)]
    assert scoreboard.update(conn, ((una - 1000, una),)) == 0                         # D-SACK below SND.UNA
    assert scoreboard.update(conn, ((una + 9000, una + 11000),)) == 0                 # beyond SND.MAX
    assert scoreboard.update(conn, ((una + 3000, una + 4000),)) == 0                  # nothing new
    assert scoreboard.offsets(conn) == [(2000, 6000)]
    peer.send(ACK, ack=una + 3000)                                              # SND.UNA into the range
    assert conn.scoreboard == [((una + 3000) & 0xFFFFFFFF, (una + 6000) & 0xFFFFFFFF)]
    peer.send(ACK, ack=una + 7000)                                              # past it
    assert conn.scoreboard == []


def test_is_lost_needs_more_than_two_segments_sacked_above():
    eng, sid, peer, conn, una, _ = _sack_sender(10)
    scoreboard.update(conn, ((una + 1000, una + 3000),))
    assert not scoreboard.is_lost(conn, una)                                          # two above: not yet
    scoreboard.update(conn, ((una + 4000, una + 5000),))
    assert scoreboard.is_lost(conn, una)                                              # three
    assert not scoreboard.is_lost(conn, una + 3000)                                   # only one above it
    assert not scoreboard.is_lost(conn, una + 1000)                                   # SACKed itself
    assert [lost for _, _, lost in scoreboard.holes(conn)] == [True, False, False]


def test_pipe_counts_unsacked_not_lost_and_retransmitted():
    eng, sid, peer, conn, una, _ = _sack_sender(10)
    assert scoreboard.pipe(conn) == 10 * MSS
    scoreboard.update(conn, ((una + 1000, una + 4000),))
    # segment 0 is lost (3 SACKed above), 1-3 SACKed, 4-9 in flight
    assert scoreboard.pipe(conn) == 6 * MSS


def test_three_sacked_segments_start_recovery_and_nextseg_repairs_lost_holes_first():
    eng, sid, peer, conn, una, segs = _sack_sender(20)
    assert len(segs) == 20
    # holes at segments 0, 4 and 8; everything else up to 12 arrives
    _dupack(peer, una, (1, 4))
    out = peer.take()
    assert conn.in_recovery and eng.counters["fast_retransmits"] == 1
    assert [s.seq for s in out] == [una]                                        # the head at once
    # PRR (RFC 6937): pipe 17 segments (16 unSACKed in flight + the retransmission) is above
    # ssthresh (10), so cwnd = pipe + ceil(delivered 3 x ssthresh / RecoverFS 20) - sent 1 = +0.5
    assert conn.ssthresh == 10 * MSS and conn.cwnd == 17 * MSS + MSS // 2
    _dupack(peer, una, (5, 8), (1, 4))
    _dupack(peer, una, (9, 13), (5, 8), (1, 4))
    _dupack(peer, una, (9, 14), (5, 8), (1, 4))      # (PRR: the pipe is at ssthresh; one more ACK)
    out = [s.seq for s in peer.take()]
    # rule 1 first: hole 4 (lost once 5-7 are SACKed), later hole 8 (once 9-12 are); what PRR
    # allows beyond them is new data (rule 2); nothing SACKed is sent again
    assert out[0] == una + 4000 and una + 8000 in out
    assert all(seq in (una + 4000, una + 8000) or seq >= una + 20000 for seq in out)
    assert eng.counters["rto_expiries"] == 0


def test_several_holes_repaired_in_one_round_trip_without_an_rto():
    eng, sid, peer, conn, una, segs = _sack_sender(30)
    holes = [0, 5, 10, 15, 20]
    have = [i for i in range(30) if i not in holes]
    sacked = []
    sent = []
    for i in have:                                   # the peer's duplicate ACKs as the segments arrive
        sacked.append(i)
        blocks = []
        for j in sorted(sacked):
            if blocks and blocks[-1][1] == j:
                blocks[-1][1] = j + 1
            else:
                blocks.append([j, j + 1])
        latest = [b for b in blocks if b[0] <= i < b[1]]
        others = [b for b in reversed(blocks) if b not in latest]
        _dupack(peer, una, *[tuple(b) for b in (latest + others)[:4]])
        sent += peer.take()
    retransmitted = sorted({(s.seq - una) & 0xFFFFFFFF for s in sent if ((s.seq - una) & 0xFFFFFFFF) < 30 * MSS})
    assert retransmitted == [h * MSS for h in holes]                             # every hole, no SACKed data
    assert eng.counters["fast_retransmits"] == 1 and eng.counters["rto_expiries"] == 0
    # the retransmissions arrive: one cumulative ACK for all the data ends recovery
    peer.send(ACK, ack=conn.snd_max)
    assert not conn.in_recovery and conn.scoreboard == []
    assert conn.cwnd <= conn.ssthresh


def test_partial_ack_retransmits_the_next_hole_at_once():
    eng, sid, peer, conn, una, _ = _sack_sender(12)
    _dupack(peer, una, (1, 4))
    peer.take()
    assert conn.in_recovery
    peer.send(ACK, ack=una + 4000, options=_sacks(una, (5, 6)))   # the head arrived; segment 4 missing
    out = peer.take()
    assert out and out[0].seq == una + 4000
    assert eng.counters["rto_expiries"] == 0


def test_a_lost_retransmission_is_sent_again_when_later_data_is_sacked():
    eng, sid, peer, conn, una, _ = _sack_sender(20, cwnd_segments=20)
    peer.call("send", sid, b"y" * 20 * MSS)
    _dupack(peer, una, (1, 4))
    first = peer.take()
    assert first[0].seq == una
    mark = conn.snd_max
    # more SACKs let new data go out; then SACKs for data sent after the retransmission arrive
    _dupack(peer, una, (1, 12))
    new = [s for s in peer.take() if ((s.seq - una) & 0xFFFFFFFF) >= 20 * MSS]
    assert new
    top = ((new[0].seq + len(new[0].payload)) - una) // MSS
    _dupack(peer, una, (1, 12), (20, top))
    again = peer.take()
    assert any(s.seq == una for s in again) and eng.counters["rto_expiries"] == 0
    assert ((conn.snd_max - mark) & 0xFFFFFFFF) > 0


def test_rto_keeps_the_scoreboard_and_go_back_n_skips_sacked_ranges():
    eng, sid, peer, conn, una, segs = _sack_sender(10)
    _dupack(peer, una, (2, 5))                                      # IsLost(head): recovery
    peer.take()
    peer.run_timer("retransmit")                                    # ... and the retransmission is lost
    assert eng.counters["rto_expiries"] == 1
    assert [s.seq for s in peer.take()] == [una]
    assert scoreboard.offsets(conn) == [(2000, 5000)]
    peer.send(ACK, ack=una + 1000)
    later = peer.take()
    peer.send(ACK, ack=una + 2000)
    later += peer.take()
    offs = [(s.seq - una) & 0xFFFFFFFF for s in later if s.payload]
    assert 1000 in offs and 5000 in offs
    assert not [o for o in offs if 2000 <= o < 5000]                # SACKed data not sent again
    peer.send(ACK, ack=una + 8000)
    later = peer.take()
    assert all(((s.seq - una) & 0xFFFFFFFF) >= 5000 for s in later if s.payload)


def test_after_an_rto_sacked_data_frees_the_pipe_but_not_the_peer_s_window():
    """RFC 6675's pipe leaves out SACKed bytes (for cwnd); the peer's window still ends at
    SND.UNA + SND.WND.  Sending past it, Linux drops the segments as beyond the window."""
    eng, sid, peer, conn, una, segs = _sack_sender(10)
    conn.cwnd = 20 * MSS
    peer.call("send", sid, bytes(5 * MSS))                          # more to send, waiting for room
    peer.take()
    peer.send(ACK, ack=una, window=10 * MSS, options=_sacks(una, (2, 10)))   # 0 and 1 lost, 2..9 SACKed
    peer.take()
    peer.run_timer("retransmit")
    assert [s.seq for s in peer.take()] == [una]
    conn.cwnd = 20 * MSS                                            # as if slow start had grown it again
    peer.send(ACK, ack=una + MSS, window=10 * MSS, options=_sacks(una, (2, 10)))
    sent = [s for s in peer.take() if s.payload]
    assert sent and sent[0].seq == (una + MSS) & 0xFFFFFFFF         # the other hole first
    edge = (una + MSS + 10 * MSS) & 0xFFFFFFFF                      # SND.UNA + SND.WND
    assert all(((edge - ((s.seq + len(s.payload)) & 0xFFFFFFFF)) & 0xFFFFFFFF) < 0x80000000 for s in sent)


def test_without_sack_permitted_newreno_recovers():
    eng, sid, peer, conn, una, _ = _sack_sender(10, sack_ok=False)
    assert not conn.sack_ok
    for _ in range(3):
        peer.send(ACK, ack=una)
    out = peer.take()
    assert out[-1].seq == una and conn.in_recovery and conn.cwnd == conn.ssthresh + 3 * MSS
    peer.send(ACK, ack=una + 2000)                                 # partial: NewReno resends the next
    assert peer.take()[0].seq == una + 2000
    assert conn.scoreboard == []


def test_fast_path_in_order_acks_leave_the_scoreboard_alone():
    eng, sid, peer, conn, una, _ = _sack_sender(10)
    peer.send(ACK, ack=una + 5000)
    assert conn.scoreboard == [] and not conn.in_recovery
    assert conn.state is State.ESTABLISHED


def test_tail_loss_probe_instead_of_rto_when_the_last_ack_is_lost():
    eng, sid, peer, conn, una, segs = _sack_sender(5)
    conn.rtt.srtt, conn.rtt.rto = 0.05, 1.0
    peer.send(ACK, ack=una + 2000)                                  # the timer restarts as the probe timer
    peer.take()
    assert conn.pto_armed and peer.deadline("retransmit") == pytest.approx(peer.now + 2 * conn.rtt.srtt)
    peer.call("send", sid, b"z" * MSS)                              # new data the probe may carry
    peer.take()
    peer.run_timer("retransmit")                                    # the ACK of the rest was lost
    probe = peer.take()
    assert len(probe) == 1 and eng.counters["tlp_probes"] == 1 and eng.counters["rto_expiries"] == 0
    assert not conn.pto_armed and peer.deadline("retransmit") == pytest.approx(peer.now + 1.0)
    peer.send(ACK, ack=conn.snd_max)                                # the probe's ACK covers everything
    assert conn.snd_una == conn.snd_max and eng.counters["rto_expiries"] == 0


def test_no_probe_timer_without_sack():
    eng, sid, peer, conn, una, segs = _sack_sender(5, sack_ok=False)
    conn.rtt.srtt, conn.rtt.rto = 0.05, 1.0
    peer.send(ACK, ack=una + 2000)
    assert not conn.pto_armed and peer.deadline("retransmit") == pytest.approx(peer.now + 1.0)


def test_prr_spreads_the_reduction_over_the_round_trip():
    """RFC 6937: while the pipe is above ssthresh, each ACK lets out data in proportion to what it
    delivered (ssthresh / RecoverFS of it), so recovery sends about ssthresh in one round trip
    instead of nothing for half of it and then a burst."""
    eng, sid, peer, conn, una, segs = _sack_sender(20, cwnd_segments=20)
    peer.call("send", sid, b"n" * 40 * MSS)          # more data waiting to go
    peer.take()
    sent_during = []
    for i in range(1, 20):                           # segment 0 lost; the others arrive one by one
        _dupack(peer, una, (1, i + 1))
        sent_during.append(sum(len(s.payload) for s in peer.take()))
    assert conn.in_recovery and conn.ssthresh == conn.recover_fs // 2
    total = sum(sent_during)
    assert 0.9 * conn.ssthresh <= total <= 1.2 * conn.ssthresh, sent_during   # about ssthresh a round trip
    assert max(sent_during) <= 2 * MSS, sent_during                    # never a burst
    assert sum(1 for n in sent_during[:10] if n) >= 4, sent_during     # and not all at the end
