"""LAST_ACK: our FIN sent after the peer's."""
from proto.tcp.state import State

from .factory import ACK, FIN, RST, in_state


def test_ack_of_fin_closes():
    eng, sid, peer = in_state(State.LAST_ACK, orphan=True)
    peer.send(ACK)
    assert peer.conn.state is State.CLOSED and peer.conn.id not in eng.conns
    t = peer.transitions[-1]
    assert (t.from_state, t.to_state) == (State.LAST_ACK, State.CLOSED)
    assert eng.by_tuple == {} and eng.ports.users == {}


def test_user_still_holding_socket_after_last_ack():
    eng, sid, peer = in_state(State.LAST_ACK)
    peer.send(ACK)
    assert peer.conn.state is State.CLOSED and sid in eng.conns
    assert peer.call("recv", sid, 10) == b""
    peer.call("close", sid)
    assert sid not in eng.conns


def test_fin_retransmitted_until_acked():
    eng, sid, peer = in_state(State.LAST_ACK)
    peer.run_timer("retransmit")
    assert peer.take_one().flags & FIN
    peer.run_timer("retransmit")
    assert peer.take_one().flags & FIN
    assert peer.conn.rtt.rto == 4.0
    peer.send(ACK)
    assert peer.conn.state is State.CLOSED


def test_rst_closes_quietly():
    eng, sid, peer = in_state(State.LAST_ACK)
    peer.send(RST)
    assert peer.conn.state is State.CLOSED
    assert peer.call("getsockopt", sid, 1, 4) == 0
