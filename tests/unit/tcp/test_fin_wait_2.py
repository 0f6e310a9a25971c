"""FIN_WAIT_2: our FIN acknowledged, waiting for the peer's."""
from proto.tcp.state import State

from .factory import ACK, FIN, in_state


def test_fin_moves_to_time_wait_and_is_acked():
    eng, sid, peer = in_state(State.FIN_WAIT_2)
    peer.send(FIN | ACK)
    ack = peer.take_one()
    assert ack.flags == ACK and ack.ack == peer.seq
    assert peer.conn.state is State.TIME_WAIT
    t = peer.transitions[-1]
    assert (t.from_state, t.to_state) == (State.FIN_WAIT_2, State.TIME_WAIT)


def test_half_close_data_keeps_flowing():
    eng, sid, peer = in_state(State.FIN_WAIT_2)
    for i in range(3):
        peer.send(ACK, b"chunk%d" % i)
    assert peer.call("recv", sid, 100) == b"chunk0chunk1chunk2"
    peer.send(FIN | ACK, b"!")
    assert peer.call("recv", sid, 100) == b"!"
    assert peer.call("recv", sid, 100) == b""


def test_not_orphaned_waits_forever():
    eng, sid, peer = in_state(State.FIN_WAIT_2, fin_wait2_timeout=10)
    peer.advance(1000)
    assert peer.conn.state is State.FIN_WAIT_2


def test_orphan_times_out():
    eng, sid, peer = in_state(State.FIN_WAIT_2, fin_wait2_timeout=10)
    peer.call("close", sid)
    assert peer.conn.timers["fin_wait_2"] == peer.now + 10
    peer.advance(9.9)
    assert peer.conn.state is State.FIN_WAIT_2
    peer.advance(0.2)
    assert peer.conn.state is State.CLOSED and peer.conn.id not in eng.conns


def test_orphaned_in_fin_wait_1_arms_timer_on_reaching_fin_wait_2():
    eng, sid, peer = in_state(State.FIN_WAIT_1, orphan=True, fin_wait2_timeout=10)
    peer.send(ACK)
    assert peer.conn.state is State.FIN_WAIT_2
    peer.advance(10)
    assert peer.conn.id not in eng.conns
