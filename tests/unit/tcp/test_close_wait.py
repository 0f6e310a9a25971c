"""CLOSE_WAIT: the peer's FIN received, we may still send."""
import errno

from proto.tcp.engine import POLLIN, POLLOUT, POLLRDHUP
from proto.tcp.state import State

from .factory import ACK, FIN, RST, in_state


def test_can_still_send():
    eng, sid, peer = in_state(State.CLOSE_WAIT)
    assert peer.call("send", sid, b"reply") == 5
    assert peer.take_one().payload == b"reply"
    assert peer.call("recv", sid, 10) == b""
    assert eng.poll(sid) == POLLIN | POLLOUT | POLLRDHUP


def test_close_sends_fin_and_moves_to_last_ack():
    eng, sid, peer = in_state(State.CLOSE_WAIT)
    peer.call("close", sid)
    fin = peer.take_one()
    assert fin.flags == ACK | FIN
    assert peer.conn.state is State.LAST_ACK
    t = peer.transitions[-1]
    assert (t.from_state, t.to_state) == (State.CLOSE_WAIT, State.LAST_ACK)


def test_rst_in_close_wait_reports_epipe_like_linux():
    eng, sid, peer = in_state(State.CLOSE_WAIT)
    peer.send(RST)
    assert peer.conn.state is State.CLOSED
    assert peer.error_of("send", sid, b"x") == errno.EPIPE
    assert eng.counters["estab_resets"] == 1


def test_data_after_fin_ignored():
    eng, sid, peer = in_state(State.CLOSE_WAIT)
    peer.send(ACK, b"impossible")
    assert peer.call("recv", sid, 100) == b""


def test_retransmitted_fin_reacked():
    eng, sid, peer = in_state(State.CLOSE_WAIT)
    peer.send(FIN | ACK, seq=peer.seq - 1, advance=False)
    assert peer.take_one().ack == peer.seq
