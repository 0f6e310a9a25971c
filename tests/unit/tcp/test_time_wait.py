"""TIME_WAIT: 2MSL, the re-ACK of a retransmitted FIN, resets, new incarnations."""
import errno

from proto.tcp.engine import POLLHUP
from proto.tcp.state import State
from proto.wire.tcp import TcpOptions

from .factory import ACK, FIN, PEER_ADDR, RST, SYN, in_state


def test_two_msl_then_closed():
    eng, sid, peer = in_state(State.TIME_WAIT, orphan=True, msl=30)
    conn = peer.conn
    assert conn.timers["time_wait"] == peer.now + 60
    peer.advance(59.9)
    assert conn.state is State.TIME_WAIT
    peer.advance(0.2)
    assert conn.state is State.CLOSED and conn.id not in eng.conns
    t = peer.transitions[-1]
    assert (t.from_state, t.to_state, t.cause) == (State.TIME_WAIT, State.CLOSED, "2MSL timeout")
    # afterwards the four-tuple is free: a segment gets a RST
    peer.send(ACK, seq=peer.seq, advance=False)
    assert peer.take_one().flags == RST


def test_retransmitted_fin_reacked_and_restarts_2msl():
    eng, sid, peer = in_state(State.TIME_WAIT, msl=30)
    peer.advance(50)
    peer.send(FIN | ACK, seq=peer.seq - 1, advance=False)
    ack = peer.take_one()
    assert ack.flags == ACK and ack.ack == peer.seq
    assert peer.conn.timers["time_wait"] == peer.now + 60
    peer.advance(59)
    assert peer.conn.state is State.TIME_WAIT
    peer.advance(1.1)
    assert peer.conn.state is State.CLOSED


def test_socket_calls_in_time_wait():
    eng, sid, peer = in_state(State.TIME_WAIT)
    assert peer.call("recv", sid, 10) == b""
    assert peer.error_of("send", sid, b"x") == errno.EPIPE
    assert eng.poll(sid) & POLLHUP
    peer.call("close", sid)
    assert peer.conn.state is State.TIME_WAIT


def test_rst_at_rcv_nxt_ends_time_wait():
    eng, sid, peer = in_state(State.TIME_WAIT, orphan=True)
    peer.send(RST)
    assert peer.conn.id not in eng.conns


def test_rst_elsewhere_ignored():
    eng, sid, peer = in_state(State.TIME_WAIT, orphan=True)
    peer.send(RST, seq=peer.seq + 100)
    assert peer.conn.state is State.TIME_WAIT


def test_bare_ack_at_rcv_nxt_ignored():
    eng, sid, peer = in_state(State.TIME_WAIT)
    peer.send(ACK)
    peer.expect_nothing()


def test_new_syn_with_higher_sequence_reuses_the_four_tuple():
    eng, sid, peer = in_state(State.TIME_WAIT, active=False, orphan=True)   # a server that closed first
    old = peer.conn
    lsid = old.id - 1
    assert eng.conns[lsid].state is State.LISTEN
    peer.send(SYN, seq=peer.seq + 100_000, options=TcpOptions(mss=1460))
    synack = peer.take_one()
    assert synack.flags == SYN | ACK
    assert synack.seq == (old.snd_nxt + 65535 + 2) & 0xFFFFFFFF
    new = eng.by_tuple[(peer.engine_port, PEER_ADDR, peer.port)]
    assert new is not old and new.state is State.SYN_RCVD
    assert old.id not in eng.conns


def test_old_syn_gets_ack():
    eng, sid, peer = in_state(State.TIME_WAIT)
    peer.send(SYN, seq=peer.seq - 10, advance=False)
    assert peer.take_one().flags == ACK
    assert peer.conn.state is State.TIME_WAIT
