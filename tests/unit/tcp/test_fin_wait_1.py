"""FIN_WAIT_1: our FIN sent, not yet acknowledged."""
import errno

from proto.tcp.state import State

from .factory import ACK, FIN, RST, in_state


def test_ack_of_fin_moves_to_fin_wait_2():
    eng, sid, peer = in_state(State.FIN_WAIT_1)
    peer.send(ACK)
    assert peer.conn.state is State.FIN_WAIT_2
    t = peer.transitions[-1]
    assert (t.from_state, t.to_state) == (State.FIN_WAIT_1, State.FIN_WAIT_2)
    assert peer.conn.timers["retransmit"] is None
    assert peer.conn.timers["fin_wait_2"] is None             # not orphaned: no timeout


def test_ack_not_covering_fin_keeps_fin_wait_1():
    eng, sid, peer = in_state(State.FIN_WAIT_1)
    peer.send(ACK, ack=peer.ack - 1)
    assert peer.conn.state is State.FIN_WAIT_1


def test_fin_without_ack_of_ours_is_simultaneous_close_to_closing():
    eng, sid, peer = in_state(State.FIN_WAIT_1)
    peer.send(FIN | ACK, ack=peer.ack - 1)
    ack = peer.take_one()
    assert ack.flags == ACK and ack.ack == peer.seq
    assert peer.conn.state is State.CLOSING
    t = peer.transitions[-1]
    assert (t.from_state, t.to_state) == (State.FIN_WAIT_1, State.CLOSING)


def test_fin_and_ack_together_go_straight_to_time_wait():
    eng, sid, peer = in_state(State.FIN_WAIT_1)
    peer.send(FIN | ACK)
    assert peer.take_one().ack == peer.seq
    assert peer.conn.state is State.TIME_WAIT
    t = peer.transitions[-1]
    assert (t.from_state, t.to_state, t.cause) == (State.FIN_WAIT_1, State.TIME_WAIT, "FIN+ACK / ACK")


def test_half_closed_still_receives():
    eng, sid, peer = in_state(State.FIN_WAIT_1)
    peer.send(ACK, b"more data", ack=peer.ack - 1)
    assert peer.call("recv", sid, 100) == b"more data"
    assert peer.error_of("send", sid, b"x") == errno.EPIPE


def test_orphan_receiving_new_data_resets():
    eng, sid, peer = in_state(State.FIN_WAIT_1, orphan=True)
    peer.send(ACK, b"nobody reads this", ack=peer.ack - 1)
    rst = peer.take_one()
    assert rst.flags & RST
    assert peer.conn.id not in eng.conns
    assert eng.counters["abort_on_data"] == 1


def test_fin_retransmitted_on_timeout():
    eng, sid, peer = in_state(State.FIN_WAIT_1)
    fin_seq = peer.ack - 1
    peer.run_timer("retransmit")
    re = peer.take_one()
    assert re.flags & FIN and re.seq == fin_seq
    assert eng.counters["retrans_segs"] == 1
    peer.send(ACK)
    assert peer.conn.state is State.FIN_WAIT_2


def test_orphan_gives_up_after_max_retries():
    eng, sid, peer = in_state(State.FIN_WAIT_1, orphan=True, max_retries=2)
    peer.advance(1 + 2 + 4 + 0.1)
    assert peer.conn.id not in eng.conns
    assert peer.transitions[-1].to_state is State.CLOSED


def test_rst_in_fin_wait_1():
    eng, sid, peer = in_state(State.FIN_WAIT_1)
    peer.send(RST)
    assert peer.conn.state is State.CLOSED
    assert peer.error_of("recv", sid, 1) == errno.ECONNRESET
