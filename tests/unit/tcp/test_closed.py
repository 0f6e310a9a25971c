"""No socket / CLOSED: resets for strays, user calls on an unconnected socket, ports, ISNs."""
import errno

import pytest

from proto.tcp import seqnum
from proto.tcp.engine import POLLHUP, POLLNVAL, POLLOUT, SO_REUSEADDR, SOL_SOCKET, TcpError
from proto.tcp.state import State

from .factory import (ACK, ENGINE_ADDR, FIN, PEER_ADDR, RST, SYN, Peer, closed, in_state, listening,
                      make_engine)


def stray_peer(**kw):
    eng = make_engine(**kw)
    return eng, Peer(eng, engine_port=9999)


def test_segment_with_ack_to_no_socket_gets_rst_seq_seg_ack():
    eng, peer = stray_peer()
    peer.send(ACK, b"data", seq=500, ack=777)
    rst = peer.take_one()
    assert rst.flags == RST and rst.seq == 777 and rst.ack == 0
    assert (rst.src_port, rst.dst_port) == (9999, peer.port)
    assert eng.counters["out_rsts"] == 1 and eng.counters["drop_no_socket"] == 1


def test_segment_without_ack_to_no_socket_gets_rst_ack():
    eng, peer = stray_peer()
    peer.send(SYN, seq=1000)
    rst = peer.take_one()
    assert rst.flags == RST | ACK and rst.seq == 0 and rst.ack == 1001


def test_rst_ack_counts_data_and_fin():
    eng, peer = stray_peer()
    peer.send(FIN, b"abc", seq=seqnum.MASK - 1)
    rst = peer.take_one()
    assert rst.ack == (seqnum.MASK - 1 + 4) & seqnum.MASK


@pytest.mark.parametrize("flags", [RST, RST | ACK])
def test_never_a_reset_to_a_reset(flags):
    eng, peer = stray_peer()
    peer.send(flags, seq=1, ack=2)
    peer.expect_nothing()


def test_segment_for_another_address_dropped_silently():
    eng, peer = stray_peer()
    eng.segment_in(peer.now, PEER_ADDR, "198.18.0.99", peer.segment(SYN))
    peer.expect_nothing()
    assert eng.counters["drop_not_local"] == 1


def test_closed_socket_does_not_accept_connections():
    eng, sid, peer = closed()
    peer.call("bind", sid, "0.0.0.0", 80)           # bound but not listening
    peer.send(SYN)
    assert peer.take_one().flags == RST | ACK


def test_user_calls_on_unconnected_socket_match_linux():
    eng, sid, peer = closed()
    assert peer.error_of("send", sid, b"x") == errno.EPIPE          # Linux: EPIPE, not ENOTCONN
    assert peer.error_of("recv", sid, 10) == errno.ENOTCONN
    assert peer.error_of("shutdown", sid, 1) == errno.ENOTCONN
    assert peer.error_of("getpeername", sid) == errno.ENOTCONN
    assert peer.error_of("accept", sid) == errno.EINVAL
    assert peer.call("getsockname", sid) == ("0.0.0.0", 0)
    assert eng.poll(sid) == POLLOUT | POLLHUP
    assert peer.call("recv", sid, 0) == b""


def test_bad_socket_id():
    eng, sid, peer = closed()
    assert peer.error_of("send", 999, b"x") == errno.EBADF
    peer.call("close", sid)
    assert peer.error_of("recv", sid, 1) == errno.EBADF
    assert eng.poll(sid) == POLLNVAL
    assert sid not in eng.conns


def test_bind_errors():
    eng, sid, peer = closed()
    assert peer.error_of("bind", sid, "10.1.2.3", 80) == errno.EADDRNOTAVAIL
    peer.call("bind", sid, ENGINE_ADDR, 80)
    assert peer.call("getsockname", sid) == (ENGINE_ADDR, 80)
    assert peer.error_of("bind", sid, ENGINE_ADDR, 81) == errno.EINVAL      # already bound
    other = peer.call("socket")
    assert peer.error_of("bind", other, "0.0.0.0", 80) == errno.EADDRINUSE
    assert peer.error_of("bind", other, "0.0.0.0", 70000) == errno.EINVAL


def test_bind_port_zero_picks_ephemeral():
    eng, sid, peer = closed(ephemeral_ports=(40000, 40009))
    peer.call("bind", sid, "0.0.0.0", 0)
    assert 40000 <= peer.call("getsockname", sid)[1] <= 40009


def test_ephemeral_range_exhausted():
    eng, sid, peer = closed(ephemeral_ports=(40000, 40001))
    for _ in range(2):
        s = peer.call("socket")
        peer.call("bind", s, "0.0.0.0", 0)
    assert peer.error_of("bind", sid, "0.0.0.0", 0) == errno.EADDRINUSE
    assert peer.error_of("listen", sid, 5) == errno.EADDRINUSE
    assert peer.error_of("connect", sid, PEER_ADDR, 80) == errno.EADDRNOTAVAIL


def test_reuseaddr_needed_on_both_and_never_over_a_listener():
    eng, lsid, peer = listening(port=80)
    s = peer.call("socket")
    peer.call("setsockopt", s, SOL_SOCKET, SO_REUSEADDR, 1)
    assert peer.error_of("bind", s, "0.0.0.0", 80) == errno.EADDRINUSE


def test_time_wait_blocks_bind_without_reuseaddr():
    eng, sid, peer = in_state(State.TIME_WAIT, active=False)       # a passive connection on port 80 in TIME_WAIT
    lsid = peer.conn.id - 1
    peer.call("close", lsid)
    peer.call("close", sid)
    assert peer.conn.state is State.TIME_WAIT
    s = peer.call("socket")
    assert peer.error_of("bind", s, "0.0.0.0", 80) == errno.EADDRINUSE     # Linux: both need SO_REUSEADDR


def test_reuseaddr_listener_restarts_over_its_time_wait_children():
    eng, lsid, peer = listening(port=80)
    peer.call("close", lsid)
    lsid = peer.call("socket")
    peer.call("setsockopt", lsid, SOL_SOCKET, SO_REUSEADDR, 1)
    peer.call("bind", lsid, "0.0.0.0", 80)
    peer.call("listen", lsid, 5)
    peer.send(SYN, options=peer.syn_options())
    peer.take_one()
    peer.send(ACK)
    child, _ = peer.call("accept", lsid)
    peer.call("close", child)                       # active close -> FIN_WAIT_1
    peer.take_one()
    peer.send(FIN | ACK)                            # -> TIME_WAIT
    peer.take_one()
    assert eng.conns[child].state is State.TIME_WAIT
    peer.call("close", lsid)
    s = peer.call("socket")
    assert peer.error_of("bind", s, "0.0.0.0", 80) == errno.EADDRINUSE
    peer.call("setsockopt", s, SOL_SOCKET, SO_REUSEADDR, 1)
    peer.call("bind", s, "0.0.0.0", 80)
    peer.call("listen", s, 5)
    assert eng.conns[s].state is State.LISTEN


def test_listen_binds_an_ephemeral_port():
    eng, sid, peer = closed(ephemeral_ports=(50000, 50010))
    peer.call("listen", sid, 5)
    assert 50000 <= peer.call("getsockname", sid)[1] <= 50010
    assert peer.conn.state is State.LISTEN
    t = peer.transitions[-1]
    assert (t.from_state, t.to_state) == (State.CLOSED, State.LISTEN)


def test_connect_ports_differ_and_skip_used_four_tuples():
    eng, sid, peer = closed(ephemeral_ports=(50000, 50001))
    ports = set()
    for _ in range(2):
        s = peer.call("socket")
        assert peer.error_of("connect", s, PEER_ADDR, 80) == errno.EINPROGRESS
        ports.add(peer.call("getsockname", s)[1])
    assert ports == {50000, 50001}
    # a third connect to the same destination has no port left; to another it can share one
    assert peer.error_of("connect", sid, PEER_ADDR, 80) == errno.EADDRNOTAVAIL
    assert peer.error_of("connect", sid, PEER_ADDR, 81) == errno.EINPROGRESS


def test_connect_from_an_explicitly_bound_port():
    eng, sid, peer = closed()
    peer.call("bind", sid, "0.0.0.0", 12345)
    assert peer.error_of("connect", sid, PEER_ADDR, 80) == errno.EINPROGRESS
    assert peer.take_one().src_port == 12345
    assert peer.call("getsockname", sid) == (ENGINE_ADDR, 12345)


def test_isn_keyed_per_four_tuple_and_clocked_at_4_microseconds():
    eng = make_engine()
    a = eng.cx.isn(0.0, 1000, PEER_ADDR, 80)
    b = eng.cx.isn(0.0, 1001, PEER_ADDR, 80)
    assert a != b
    assert eng.cx.isn(1.0, 1000, PEER_ADDR, 80) == (a + 250_000) & seqnum.MASK
    from proto.tcp.config import TcpConfig
    from proto.tcp.engine import TcpEngine
    assert TcpEngine(TcpConfig(), ENGINE_ADDR, b"another secret").cx.isn(0.0, 1000, PEER_ADDR, 80) != a


def test_connect_bad_address():
    eng, sid, peer = closed()
    assert peer.error_of("connect", sid, "not-an-address", 80) == errno.EINVAL


def test_loopback_addresses_are_ours():
    """127.0.0.0/8 is local, as on Linux's lo: bind to it, connect from it, take segments to it."""
    eng, sid, peer = closed()
    assert peer.error_of("bind", sid, "127.0.0.1", 80) is None
    assert eng.cx.is_local("127.5.6.7") and eng.cx.is_local(ENGINE_ADDR) and not eng.cx.is_local(PEER_ADDR)


@pytest.mark.parametrize("dst, src", [("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "127.0.0.1"),
                                      (ENGINE_ADDR, ENGINE_ADDR), (PEER_ADDR, ENGINE_ADDR)])
def test_connect_takes_the_source_address_of_the_way_out(dst, src):
    """As Linux's route lookup: to 127/8 (and to INADDR_ANY, which means loopback) from 127.0.0.1."""
    eng, sid, peer = closed()
    assert peer.error_of("connect", sid, dst, 80) == errno.EINPROGRESS
    conn = eng.conns[sid]
    assert conn.local_addr == src and conn.remote_addr == (dst if dst != "0.0.0.0" else "127.0.0.1")


def test_a_socket_may_be_named_by_its_caller_above_the_engine_s_own_ids():
    """libsock posts socket() with an id it chose (from NAMED_SOCKET_IDS up) instead of waiting for one."""
    from proto.ipc.messages import NAMED_SOCKET_IDS as NAMED
    eng = make_engine()
    assert eng.socket(0.0, NAMED + 7) == NAMED + 7 and NAMED + 7 in eng.conns
    for taken_or_bad in (NAMED + 7, 5, NAMED - 1, 1 << 63, "x"):
        with pytest.raises(TcpError) as caught:
            eng.socket(0.0, taken_or_bad)
        assert caught.value.errno == errno.EINVAL
    assert eng.socket(0.0) < NAMED
