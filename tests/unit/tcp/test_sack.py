"""SACK as a receiver (RFC 2018): SACK-permitted in the SYNs, SACK blocks on the ACKs for out-of-order data."""
from proto.wire.tcp import TcpOptions

from .factory import ACK, SYN, listening, syn_sent


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

