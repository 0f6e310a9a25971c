"""LISTEN: tcp_conn_request, the accept queue, backlog, closing a listener."""
import errno

from proto.tcp.engine import POLLIN
from proto.tcp.state import State
from proto.wire.tcp import TcpOptions

from .factory import ACK, FIN, PEER_ADDR, RST, SYN, Peer, listening


def child_of(eng, peer):
    return eng.by_tuple.get((peer.engine_port, PEER_ADDR, peer.port))


def handshake(eng, lsid, peer):
    peer.send(SYN, options=peer.syn_options())
    synack = peer.take_one()
    peer.send(ACK)
    return synack


def test_syn_creates_child_in_syn_rcvd_and_listener_keeps_listening():
    eng, lsid, peer = listening()
    peer.send(SYN, options=peer.syn_options())
    synack = peer.take_one()
    assert synack.flags == SYN | ACK
    assert synack.ack == peer.iss + 1
    assert synack.options.mss == 1460
    assert (synack.src_port, synack.dst_port) == (80, peer.port)
    child = child_of(eng, peer)
    assert child.state is State.SYN_RCVD and child.iss == synack.seq
    assert (child.local_port, child.remote_addr, child.remote_port) == (80, PEER_ADDR, peer.port)
    assert eng.conns[lsid].state is State.LISTEN
    t = peer.transitions[-1]
    assert (t.conn_id, t.from_state, t.to_state) == (child.id, State.LISTEN, State.SYN_RCVD)
    assert ("retransmit" in child.timers) and child.timers["retransmit"] is not None


def test_ack_to_listener_gets_rst():
    eng, lsid, peer = listening()
    peer.send(ACK, seq=5, ack=1234)
    rst = peer.take_one()
    assert rst.flags == RST and rst.seq == 1234


def test_rst_to_listener_ignored():
    eng, lsid, peer = listening()
    peer.send(RST, seq=5)
    peer.expect_nothing()
    assert eng.counters["drop_listen_rst"] == 1


def test_segment_without_syn_dropped():
    eng, lsid, peer = listening()
    peer.send(FIN, seq=5)
    peer.expect_nothing()


def test_handshake_queues_child_and_accept_returns_it():
    eng, lsid, peer = listening()
    assert peer.error_of("accept", lsid) == errno.EAGAIN
    assert eng.poll(lsid) == 0
    handshake(eng, lsid, peer)
    assert lsid in peer.woken
    assert eng.poll(lsid) == POLLIN
    sid, addr = peer.call("accept", lsid)
    assert addr == (PEER_ADDR, peer.port)
    assert eng.conns[sid].state is State.ESTABLISHED
    assert peer.call("getpeername", sid) == (PEER_ADDR, peer.port)
    assert eng.counters["passive_opens"] == 1
    assert peer.error_of("accept", lsid) == errno.EAGAIN


def test_accept_on_non_listener_is_einval():
    eng, lsid, peer = listening()
    handshake(eng, lsid, peer)
    sid, _ = peer.call("accept", lsid)
    assert peer.error_of("accept", sid) == errno.EINVAL


def test_listen_again_changes_backlog_and_is_capped():
    eng, lsid, peer = listening(max_backlog=16)
    peer.call("listen", lsid, 1000)
    assert eng.conns[lsid].backlog == 16
    peer.call("listen", lsid, -1)
    assert eng.conns[lsid].backlog == 16


def test_backlog_overflow_drops_syn_silently_like_linux():
    eng, lsid, peer = listening(backlog=1)
    peers = [Peer(eng, port=41000 + i) for i in range(3)]
    for p in peers:
        p.send(SYN, options=p.syn_options())
        synacks = p.take()
        if p is peers[2]:
            assert synacks == []                       # queue full (Linux: more than backlog queued)
        else:
            assert synacks[0].flags == SYN | ACK
            p.send(ACK)
    assert len(eng.conns[lsid].accept_queue) == 2
    assert eng.counters["listen_overflows"] == 1 and eng.counters["listen_drops"] == 1
    assert child_of(eng, peers[2]) is None


def test_full_accept_queue_drops_final_ack_until_room():
    eng, lsid, peer = listening(backlog=0)
    p1, p2 = Peer(eng, port=41001), Peer(eng, port=41002)
    p1.send(SYN, options=p1.syn_options())
    p2.send(SYN, options=p2.syn_options())          # both SYNs admitted: the accept queue is still empty
    p1.take_one(), p2.take_one()
    p1.send(ACK)
    p2.send(ACK)                                    # queue full now: this ACK is dropped
    assert child_of(eng, p2).state is State.SYN_RCVD
    assert eng.counters["listen_overflows"] == 1
    peer.call("accept", lsid)
    # the child retransmits its SYN+ACK; the peer's ACK now gets it queued
    peer.advance(1.0)
    synack = p2.take_one()
    assert synack.flags == SYN | ACK
    p2.send(ACK)
    assert child_of(eng, p2).state is State.ESTABLISHED
    assert peer.call("accept", lsid)[1] == (PEER_ADDR, 41002)


def test_window_scale_negotiated_only_if_peer_offers():
    eng, lsid, peer = listening(rcvbuf=1 << 20)
    peer.send(SYN, options=TcpOptions(mss=1460, window_scale=2))
    synack = peer.take_one()
    assert synack.options.window_scale == 7                 # for the 6 MiB autotuning ceiling, as Linux
    assert synack.window == 65535                           # never scaled in a SYN
    child = child_of(eng, peer)
    assert child.snd_wscale == 2 and child.rcv_wscale == 7

    p2 = Peer(eng, port=41002)
    p2.send(SYN, options=TcpOptions(mss=1460))
    synack = p2.take_one()
    assert synack.options.window_scale is None
    assert child_of(eng, p2).rcv_wscale == 0 and child_of(eng, p2).snd_wscale == 0


def test_mss_honoured_and_defaults_to_536():
    eng, lsid, peer = listening()
    peer.send(SYN, options=TcpOptions(mss=1000))
    assert child_of(eng, peer).send_mss == 1000
    p2 = Peer(eng, port=41002)
    p2.send(SYN)
    assert child_of(eng, p2).send_mss == 536
    p3 = Peer(eng, port=41003)
    p3.send(SYN, options=TcpOptions(mss=9000))
    assert child_of(eng, p3).send_mss == 1460


def test_data_on_syn_is_not_acknowledged():
    eng, lsid, peer = listening()
    peer.send(SYN, b"early", options=peer.syn_options())
    assert peer.take_one().ack == peer.iss + 1


def test_children_inherit_socket_options():
    eng, lsid, peer = listening()
    peer.call("setsockopt", lsid, 6, 1, 1)        # TCP_NODELAY
    peer.call("setsockopt", lsid, 1, 9, 1)        # SO_KEEPALIVE
    handshake(eng, lsid, peer)
    sid, _ = peer.call("accept", lsid)
    assert peer.call("getsockopt", sid, 6, 1) == 1
    assert peer.call("getsockopt", sid, 1, 9) == 1
    assert eng.conns[sid].timers["keepalive"] is not None


def test_closing_listener_resets_queued_children_and_drops_half_open_ones():
    eng, lsid, peer = listening()
    handshake(eng, lsid, peer)                          # queued, ESTABLISHED
    p2 = Peer(eng, port=41002)
    p2.send(SYN, options=p2.syn_options())              # half-open, SYN_RCVD
    p2.take()
    queued = child_of(eng, peer)
    peer.call("close", lsid)
    rst = peer.take_one()
    assert rst.flags & RST and rst.seq == queued.snd_nxt
    p2.expect_nothing()
    assert eng.listeners == {} and eng.by_tuple == {} and eng.conns == {}
    # new SYNs are now refused
    p3 = Peer(eng, port=41003)
    p3.send(SYN)
    assert p3.take_one().flags == RST | ACK


def test_shutdown_rd_stops_listening():
    eng, lsid, peer = listening()
    peer.call("shutdown", lsid, 0)
    assert eng.conns[lsid].state is State.CLOSED
    peer.send(SYN)
    assert peer.take_one().flags & RST
