"""CLOSING: both FINs sent, ours not yet acknowledged (simultaneous close)."""
from proto.tcp.state import State

from .factory import ACK, FIN, in_state


def test_ack_of_fin_moves_to_time_wait():
    eng, sid, peer = in_state(State.CLOSING)
    peer.send(ACK)
    assert peer.conn.state is State.TIME_WAIT
    t = peer.transitions[-1]
    assert (t.from_state, t.to_state) == (State.CLOSING, State.TIME_WAIT)


def test_our_fin_retransmitted():
    eng, sid, peer = in_state(State.CLOSING)
    peer.run_timer("retransmit")
    assert peer.take_one().flags & FIN
    peer.send(ACK)
    assert peer.conn.state is State.TIME_WAIT


def test_retransmitted_fin_from_peer_reacked():
    eng, sid, peer = in_state(State.CLOSING)
    peer.send(FIN | ACK, seq=peer.seq - 1, ack=peer.ack - 1)
    assert peer.take_one().ack == peer.seq
    assert peer.conn.state is State.CLOSING
