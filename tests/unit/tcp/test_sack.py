"""SACK as a receiver (RFC 2018): SACK-permitted in the SYNs, SACK blocks on the ACKs for out-of-order data;
limited transmit (RFC 3042) and duplicate ACKs recognised by their SACK blocks."""
from proto.wire.tcp import TcpOptions

from .factory import ACK, SYN, established, listening, syn_sent


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
    eng, lsid, peer = listening()
    peer.send(SYN, options=TcpOptions(mss=1460, sack_permitted=sack))
    peer.take_one()
    peer.conn = eng.by_tuple[(peer.engine_port, peer.addr, peer.port)]
    peer.send(ACK)
    sid, _ = peer.call("accept", lsid)
    return eng, sid, peer


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
    first = peer.take()
    una = conn.snd_una
    for i in range(1, 4):          # the window grows with each: not duplicates by RFC 5681 alone
        sack = TcpOptions(sack_blocks=((una + 1000, una + 1000 + 1000 * i),))
        peer.send(ACK, ack=una, window=peer.window - 100 * i, options=sack)
    assert eng.counters["fast_retransmits"] == 1
    assert any(s.seq == una for s in peer.take())
