"""SYN_RCVD (a passive child): the final ACK, resets, retransmitted SYNs, SYN+ACK retransmission."""
import errno

from proto.tcp.state import State

from .factory import ACK, FIN, PEER_ADDR, RST, SYN, syn_rcvd


def test_ack_establishes_and_queues():
    eng, lsid, peer = syn_rcvd()
    child = peer.conn
    peer.send(ACK)
    assert child.state is State.ESTABLISHED and child.queued
    t = peer.transitions[-1]
    assert (t.from_state, t.to_state) == (State.SYN_RCVD, State.ESTABLISHED)
    assert lsid in peer.woken
    assert child.timers["retransmit"] is None


def test_bad_ack_gets_rst():
    eng, lsid, peer = syn_rcvd()
    peer.send(ACK, ack=peer.ack + 10, advance=False)
    rst = peer.take_one()
    assert rst.flags == RST and rst.seq == peer.ack + 10
    assert peer.conn.state is State.SYN_RCVD


def test_rst_drops_child_listener_unaffected():
    eng, lsid, peer = syn_rcvd()
    peer.send(RST)
    assert peer.conn.state is State.CLOSED
    assert peer.conn.id not in eng.conns
    assert eng.conns[lsid].state is State.LISTEN and not eng.conns[lsid].syn_queue
    assert peer.error_of("accept", lsid) == errno.EAGAIN
    assert eng.counters["attempt_fails"] == 1


def test_rst_in_window_not_exact_challenged():
    eng, lsid, peer = syn_rcvd()
    peer.send(RST, seq=peer.seq + 100)
    ack = peer.take_one()
    assert ack.flags == ACK
    assert peer.conn.state is State.SYN_RCVD


def test_retransmitted_syn_answered_with_syn_ack():
    eng, lsid, peer = syn_rcvd()
    peer.send(SYN, seq=peer.iss, options=peer.syn_options())
    again = peer.take_one()
    assert again.flags == SYN | ACK and again.seq == peer.conn.iss and again.ack == peer.iss + 1


def test_other_syn_challenged():
    eng, lsid, peer = syn_rcvd()
    peer.send(SYN, seq=peer.iss + 5)
    assert peer.take_one().flags == ACK
    assert peer.conn.state is State.SYN_RCVD


def test_syn_ack_retransmitted_then_child_given_up():
    eng, lsid, peer = syn_rcvd(synack_retries=2)
    peer.advance(1.0)
    assert peer.take_one().flags == SYN | ACK
    peer.advance(2.0)
    assert peer.take_one().flags == SYN | ACK
    peer.advance(4.0)
    peer.expect_nothing()
    assert peer.conn.state is State.CLOSED and peer.conn.id not in eng.conns
    assert not eng.conns[lsid].syn_queue


def test_ack_with_data_and_fin():
    eng, lsid, peer = syn_rcvd()
    peer.send(ACK | FIN, b"hello")
    ack = peer.take_one()
    assert ack.ack == peer.iss + 1 + 5 + 1
    child = peer.conn
    assert child.state is State.CLOSE_WAIT
    sid, addr = peer.call("accept", lsid)
    assert addr == (PEER_ADDR, peer.port)
    assert peer.call("recv", sid, 100) == b"hello"
    assert peer.call("recv", sid, 100) == b""


def test_unacceptable_segment_acked():
    eng, lsid, peer = syn_rcvd()
    peer.send(ACK, b"x", seq=peer.seq + 10_000_000)
    assert peer.take_one().flags == ACK
    assert peer.conn.state is State.SYN_RCVD
