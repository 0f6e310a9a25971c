"""tcp.mem_max (Linux's tcp_mem): the bytes all receive queues hold together are bounded; at
the cap windows stop opening and data is dropped (the sender retransmits), except one segment
for a connection that holds nothing, so that every connection can go on; a read makes room."""
from proto.tcp.state import State

from .factory import ACK, PSH, SYN, Peer, listening


def _accepted(eng, lsid, port):
    peer = Peer(eng, port=port, engine_port=80)
    peer.send(SYN, options=peer.syn_options())
    peer.take_one()
    peer.send(ACK)
    sid, _ = peer.call("accept", lsid)
    assert eng.conns[sid].state is State.ESTABLISHED
    return peer, sid


def test_receive_queues_stop_at_mem_max_and_a_read_makes_room():
    eng, lsid, _ = listening(backlog=5, mem_max=20_000)
    a, a_sid = _accepted(eng, lsid, 41000)
    b, b_sid = _accepted(eng, lsid, 41001)
    for _ in range(10):
        a.send(ACK | PSH, payload=b"a" * 1000)
        b.send(ACK | PSH, payload=b"b" * 1000)
    a.take(), b.take()
    assert eng.counters["mem_held"] == 20_000 and eng.counters["drop_mem_pressure"] == 0
    edge = eng.conns[b_sid].rcv_adv
    b.send(ACK | PSH, payload=b"c" * 1000, advance=False)          # over the cap: dropped
    acks = b.take()
    assert acks and acks[-1].ack == b.iss + 1 + 10_000               # nothing more taken
    assert eng.counters["drop_mem_pressure"] == 1 and eng.counters["mem_held"] == 20_000
    assert eng.conns[b_sid].rcv_adv == edge                          # the window did not open further
    # a connection that holds nothing still takes a segment (at most one MSS)
    c, c_sid = _accepted(eng, lsid, 41002)
    c.send(ACK | PSH, payload=b"x" * 3000, advance=False)
    assert eng.conns[c_sid].recv_buffer.length == eng.conns[c_sid].rcv_mss < 3000
    # the application reads: room again, and b's retransmission is taken
    assert len(a.call("recv", a_sid, 100_000)) == 10_000
    b.send(ACK | PSH, payload=b"c" * 1000)
    assert b.take()[-1].ack == b.iss + 1 + 11_000
    assert eng.counters["mem_held"] == 11_000 + eng.conns[c_sid].rcv_mss
    # a closed connection gives back what it held
    b.call("close", b_sid)
    assert eng.counters["mem_held"] == eng.conns[c_sid].rcv_mss or b_sid in eng.conns


def test_sends_past_mem_max_wait_for_their_own_acks_but_each_socket_may_queue_4_kib():
    import errno
    eng, lsid, _ = listening(backlog=5, mem_max=20_000)
    a, a_sid = _accepted(eng, lsid, 41000)
    b, b_sid = _accepted(eng, lsid, 41001)
    assert a.call("send", a_sid, b"a" * 30_000) == 20_000          # the cap, not SO_SNDBUF, stops it
    assert eng.counters["mem_held"] == 20_000
    assert a.error_of("send", a_sid, b"more") == errno.EAGAIN        # waits for its own ACKs
    assert eng.send_credit(b_sid) == 4096                            # Linux's tcp_wmem[0]
    assert b.call("send", b_sid, b"b" * 10_000) == 4096              # every socket can go on
    assert b.error_of("send", b_sid, b"b") == errno.EAGAIN
    got = bytes(a.received)
    a.send(ACK, ack=a.ack)                                           # the peer acknowledges what came
    assert got and eng.counters["mem_held"] == 20_000 + 4096 - len(got)
