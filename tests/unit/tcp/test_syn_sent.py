"""SYN_SENT: active open, its answers, simultaneous open, SYN retransmission and the connect timer."""
import errno

import pytest

from proto.tcp.engine import POLLERR, POLLHUP, POLLIN, POLLOUT
from proto.tcp.state import State
from proto.wire.tcp import TcpOptions

from .factory import ACK, FIN, PEER_ADDR, RST, SYN, syn_sent


def test_connect_sends_syn_with_mss_and_window_scale():
    eng, sid, peer = syn_sent()
    conn = peer.conn
    assert conn.state is State.SYN_SENT
    syn = peer.all_segments[-1]
    assert syn.flags == SYN and syn.seq == conn.iss
    assert syn.options.mss == 1460 and syn.options.window_scale == 7     # the 6 MiB autotuning ceiling
    assert syn.window == 65535
    assert eng.counters["active_opens"] == 1
    t = peer.transitions[-1]
    assert (t.from_state, t.to_state) == (State.CLOSED, State.SYN_SENT)
    assert peer.error_of("connect", sid, PEER_ADDR, peer.port) == errno.EALREADY


def test_calls_while_connecting():
    eng, sid, peer = syn_sent()
    assert peer.error_of("send", sid, b"x") == errno.EAGAIN
    assert peer.error_of("recv", sid, 5) == errno.EAGAIN
    assert peer.error_of("getpeername", sid) == errno.ENOTCONN
    assert eng.poll(sid) == 0


def test_syn_ack_establishes_and_acks():
    eng, sid, peer = syn_sent()
    peer.send(SYN | ACK, options=peer.syn_options())
    ack = peer.take_one()
    assert ack.flags == ACK and ack.seq == peer.conn.iss + 1 and ack.ack == peer.iss + 1
    assert peer.conn.state is State.ESTABLISHED
    assert sid in peer.woken
    assert eng.poll(sid) == POLLOUT
    assert peer.call("connect", sid, PEER_ADDR, peer.port) is None        # Linux: 0 once, then EISCONN
    assert peer.error_of("connect", sid, PEER_ADDR, peer.port) == errno.EISCONN
    assert peer.conn.timers["retransmit"] is None and peer.conn.timers["connect"] is None


def test_syn_ack_rtt_sample_taken():
    eng, sid, peer = syn_sent()
    peer.advance(0.1)
    peer.send(SYN | ACK, options=peer.syn_options())
    assert peer.conn.rtt.srtt == pytest.approx(0.1)


@pytest.mark.parametrize("ack_offset", [0, 2, -5])
def test_bad_ack_gets_rst(ack_offset):
    eng, sid, peer = syn_sent()
    bad = peer.conn.iss + ack_offset
    peer.send(SYN | ACK, ack=bad)
    rst = peer.take_one()
    assert rst.flags == RST and rst.seq == bad
    assert peer.conn.state is State.SYN_SENT


def test_rst_with_bad_ack_ignored():
    eng, sid, peer = syn_sent()
    peer.send(RST | ACK, ack=peer.conn.iss + 7)
    peer.expect_nothing()
    assert peer.conn.state is State.SYN_SENT


def test_rst_without_ack_ignored():
    eng, sid, peer = syn_sent()
    peer.send(RST, ack=0)
    assert peer.conn.state is State.SYN_SENT


def test_refused_reports_once_and_socket_can_connect_again():
    eng, sid, peer = syn_sent()
    peer.send(RST | ACK, seq=0)
    assert peer.conn.state is State.CLOSED
    assert sid in peer.woken
    assert eng.poll(sid) & (POLLERR | POLLHUP | POLLIN) == POLLERR | POLLHUP | POLLIN
    assert eng.counters["attempt_fails"] == 1
    assert peer.error_of("connect", sid, PEER_ADDR, peer.port) == errno.ECONNREFUSED
    assert peer.error_of("connect", sid, PEER_ADDR, peer.port) == errno.EINPROGRESS
    assert peer.take_one().flags == SYN


def test_refused_seen_through_so_error():
    eng, sid, peer = syn_sent()
    peer.send(RST | ACK, seq=0)
    assert peer.call("getsockopt", sid, 1, 4) == errno.ECONNREFUSED
    assert peer.call("getsockopt", sid, 1, 4) == 0
    assert peer.error_of("connect", sid, PEER_ADDR, peer.port) == errno.ECONNABORTED
    assert peer.call("recv", sid, 10) == b""                     # as Linux after a failed connect
    assert peer.error_of("send", sid, b"x") == errno.EPIPE


def test_segment_without_syn_or_rst_dropped():
    eng, sid, peer = syn_sent()
    peer.send(ACK, b"junk", ack=peer.conn.iss + 1)
    peer.expect_nothing()
    assert peer.conn.state is State.SYN_SENT


def test_simultaneous_open():
    eng, sid, peer = syn_sent()
    iss = peer.conn.iss
    peer.send(SYN, options=peer.syn_options())                      # crossed SYN
    synack = peer.take_one()
    assert synack.flags == SYN | ACK and synack.seq == iss and synack.ack == peer.iss + 1
    assert peer.conn.state is State.SYN_RCVD
    t = peer.transitions[-1]
    assert (t.from_state, t.to_state) == (State.SYN_SENT, State.SYN_RCVD)
    # the peer's own SYN+ACK (same ISN, acking our SYN) completes it
    peer.send(SYN | ACK, seq=peer.iss, ack=iss + 1, options=peer.syn_options(), advance=False)
    peer.expect_nothing()
    assert peer.conn.state is State.ESTABLISHED
    assert sid in peer.woken
    assert peer.call("connect", sid, PEER_ADDR, peer.port) is None


def test_simultaneous_open_completed_by_plain_ack():
    eng, sid, peer = syn_sent()
    peer.send(SYN, options=peer.syn_options())
    peer.take_one()
    peer.send(ACK, ack=peer.conn.iss + 1)
    assert peer.conn.state is State.ESTABLISHED


def test_syn_retransmitted_with_backoff_then_connect_timeout():
    eng, sid, peer = syn_sent(connect_timeout=75.0)
    start = peer.now
    times = []
    while peer.conn.state is State.SYN_SENT and peer.now - start < 100:
        peer.advance(0.5)
        for seg in peer.take():
            assert seg.flags == SYN and seg.seq == peer.conn.iss
            times.append(round(peer.now - start))
    assert times[:6] == [1, 3, 7, 15, 31, 63]        # RTO 1 s doubling
    assert peer.conn.state is State.CLOSED
    assert peer.transitions[-1].cause == "connection establishment timeout"
    assert peer.error_of("connect", sid, PEER_ADDR, peer.port) == errno.ETIMEDOUT
    assert eng.counters["attempt_fails"] == 1


def test_syn_retries_exhausted_before_connect_timer():
    eng, sid, peer = syn_sent(syn_retries=2, connect_timeout=1000)
    peer.advance(1 + 2 + 4)
    assert peer.conn.state is State.CLOSED
    assert peer.call("getsockopt", sid, 1, 4) == errno.ETIMEDOUT


def test_retransmitted_syn_not_timed_karn():
    eng, sid, peer = syn_sent()
    peer.advance(1.5)                      # one retransmission
    peer.send(SYN | ACK, options=peer.syn_options())
    assert peer.conn.rtt.srtt is None and peer.conn.rtt.rto == 1.0


def test_close_while_connecting():
    eng, sid, peer = syn_sent()
    peer.call("close", sid)
    peer.expect_nothing()
    assert sid not in eng.conns
    peer.send(SYN | ACK)
    assert peer.take_one().flags == RST


def test_shutdown_while_connecting_aborts():
    eng, sid, peer = syn_sent()
    peer.call("shutdown", sid, 2)
    assert peer.conn.state is State.CLOSED
    assert peer.error_of("connect", sid, PEER_ADDR, peer.port) == errno.EINPROGRESS


def test_peer_window_scale_and_mss_from_syn_ack():
    eng, sid, peer = syn_sent()
    peer.send(SYN | ACK, window=1000, options=TcpOptions(mss=512, window_scale=5))
    conn = peer.conn
    assert conn.send_mss == 512 and conn.snd_wscale == 5 and conn.snd_wnd == 1000
    peer.send(ACK, window=1000)                        # now scaled
    assert conn.snd_wnd == 1000 << 5


def test_syn_ack_without_window_scale_disables_ours():
    eng, sid, peer = syn_sent()
    peer.send(SYN | ACK, options=TcpOptions(mss=1460))
    assert peer.conn.rcv_wscale == 0
    assert peer.all_segments[-1].window == 65535


def test_fin_in_syn_ack_ignored_until_retransmitted():
    eng, sid, peer = syn_sent()
    peer.send(SYN | ACK | FIN, options=peer.syn_options())
    assert peer.conn.state is State.ESTABLISHED
