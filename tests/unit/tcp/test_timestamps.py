"""RFC 7323 timestamps: negotiated as Linux does, on every segment, RTT from each echo, PAWS."""
from __future__ import annotations

import errno

import pytest

from proto.tcp import seqnum
from proto.wire.tcp import TcpOptions

from .factory import ACK, PEER_ADDR, SYN, closed, listening

MASK = seqnum.MASK


def connect(peer, sid) -> None:
    assert peer.error_of("connect", sid, PEER_ADDR, peer.port) == errno.EINPROGRESS


def ts_established(peer_tsval=5000, **config):
    """An active open whose peer answers with timestamps."""
    eng, sid, peer = closed(**config)
    connect(peer, sid)
    syn = peer.take_one()
    peer.engine_port = syn.src_port
    assert syn.options.timestamps is not None and syn.options.timestamps[1] == 0    # offered, TSecr 0
    peer.send(SYN | ACK, options=TcpOptions(mss=1460, timestamps=(peer_tsval, syn.options.timestamps[0])))
    ack = peer.take_one()
    return eng, sid, peer, syn, ack


def test_negotiated_then_on_every_segment_with_our_clock_and_the_peers_echo():
    eng, sid, peer, syn, ack = ts_established(peer_tsval=5000)
    conn = peer.conn
    assert conn.ts_ok and conn.ts_recent == 5000
    assert ack.options.timestamps[1] == 5000                     # TSecr: the peer's TSval
    assert conn.send_mss == 1460 - 12                             # the option's room comes off the MSS
    peer.now += 0.25
    peer.call("send", sid, b"x" * 100)
    data = peer.take_one()
    tsval, tsecr = data.options.timestamps
    assert tsecr == 5000 and (tsval - syn.options.timestamps[0]) & MASK == 250      # milliseconds


def test_not_used_when_the_peer_does_not_answer_with_them():
    eng, sid, peer = closed()
    connect(peer, sid)
    syn = peer.take_one()
    peer.engine_port = syn.src_port
    peer.send(SYN | ACK, options=TcpOptions(mss=1460))
    peer.take_one()
    peer.call("send", sid, b"x")
    assert peer.take_one().options.timestamps is None and peer.conn.send_mss == 1460


def test_off_by_configuration():
    eng, sid, peer = closed(timestamps=0)
    connect(peer, sid)
    assert peer.take_one().options.timestamps is None


def test_a_passive_open_echoes_the_syns_timestamp():
    eng, lsid, peer = listening()
    peer.send(SYN, options=TcpOptions(mss=1460, timestamps=(777, 0)))
    synack = peer.take_one()
    assert synack.options.timestamps is not None and synack.options.timestamps[1] == 777


def test_every_ack_of_new_data_is_an_rtt_sample():
    eng, sid, peer, syn, ack = ts_established()
    conn = peer.conn
    for i in range(5):
        peer.call("send", sid, b"y" * 100)
        seg = peer.take_one()
        peer.now += 0.040                                         # 40 ms later the echo comes back
        peer.send(ACK, ack=seg.seq + 100, options=TcpOptions(timestamps=(6000 + i, seg.options.timestamps[0])))
    # five 40 ms samples after the SYN+ACK's 0 ms one, each with RFC 6298's gain of 1/8
    assert conn.rtt.srtt == pytest.approx(0.040 * (1 - (7 / 8) ** 5), abs=0.001)


def test_paws_drops_an_old_duplicate_and_answers_with_an_ack():
    eng, sid, peer, syn, ack = ts_established(peer_tsval=100_000)
    peer.send(ACK, b"new", options=TcpOptions(timestamps=(100_010, 0)))
    assert peer.call("recv", sid, 10) == b"new"
    peer.take()
    old = peer.send(ACK, b"old", options=TcpOptions(timestamps=(99_000, 0)))     # TSval < TS.Recent
    assert eng.counters["drop_paws"] == 1
    answer = peer.take_one()
    assert answer.flags == ACK and answer.ack == old.seq          # not taken: RCV.NXT did not move
    assert peer.conn.ts_recent == 100_010
