"""ESTABLISHED: data both ways, ACK rules, windows, Nagle, SWS, RFC 5961, resets, closing."""
import errno

import pytest

from proto.tcp import seqnum
from proto.tcp.engine import MSG_PEEK, POLLIN, POLLOUT
from proto.tcp.state import State
from proto.wire.tcp import TcpFlags

from .factory import ACK, FIN, PSH, PEER_ADDR, RST, SYN, established

URG = TcpFlags.URG


# ---------------------------------------------------------------- receiving
def test_in_order_data_delivered_and_ack_delayed():
    eng, sid, peer = established(quickacks=0)
    peer.send(ACK | PSH, b"hello")
    peer.expect_nothing()                                  # delayed
    assert sid in peer.woken and eng.poll(sid) & POLLIN
    d = peer.deadline("delayed_ack")
    assert d is not None and d - peer.now == pytest.approx(0.04)     # TCP_ATO_MIN, the first ato
    peer.advance(0.04)
    ack = peer.take_one()
    assert ack.flags == ACK and ack.ack == peer.seq
    assert eng.counters["delayed_acks"] == 1


def test_every_second_full_sized_segment_acked_at_once():
    eng, sid, peer = established(quickacks=0)
    peer.send(ACK, b"a" * 1460)
    peer.expect_nothing()
    peer.send(ACK, b"b" * 1460)
    ack = peer.take_one()
    assert ack.ack == peer.seq
    peer.send(ACK, b"c" * 1460)
    peer.expect_nothing()


def test_duplicate_data_acked_at_once():
    eng, sid, peer = established()
    seg = peer.send(ACK, b"hello")
    peer.take()
    peer.deliver(seg)                                   # again
    ack = peer.take_one()
    assert ack.ack == peer.seq
    assert peer.call("recv", sid, 100) == b"hello"


def test_partly_duplicate_segment_trimmed():
    eng, sid, peer = established()
    peer.send(ACK, b"hello")
    peer.send(ACK, b"hello world", seq=peer.seq - 5)
    peer.seq += 6
    assert peer.call("recv", sid, 100) == b"hello world"


def test_out_of_order_kept_and_delivered_when_hole_fills():
    eng, sid, peer = established()
    base = peer.seq
    peer.send(ACK, b"world", seq=base + 6)
    dup = peer.take_one()
    assert dup.ack == base                               # immediate duplicate ACK
    assert peer.error_of("recv", sid, 100) == errno.EAGAIN
    assert peer.conn.recv_buffer.ooo_len == 5
    peer.send(ACK, b"!", seq=base + 11)
    assert peer.take_one().ack == base
    peer.send(ACK, b"hello ", seq=base)                 # fills the hole
    ack = peer.take_one()
    assert ack.ack == base + 12                          # immediate
    assert peer.call("recv", sid, 100) == b"hello world!"
    assert peer.conn.recv_buffer.ooo_len == 0


def test_out_of_order_overlaps_merged():
    eng, sid, peer = established()
    base = peer.seq
    peer.send(ACK, b"3456", seq=base + 3)
    peer.send(ACK, b"56789", seq=base + 5)
    peer.send(ACK, b"23", seq=base + 2)
    peer.send(ACK, b"01", seq=base)
    assert peer.call("recv", sid, 100) == b"0123456789"


def test_out_of_order_fin_waits_for_the_hole():
    eng, sid, peer = established()
    base = peer.seq
    peer.send(ACK | FIN, b"end", seq=base + 5)
    assert peer.conn.state is State.ESTABLISHED
    peer.send(ACK, b"start", seq=base)
    assert peer.conn.state is State.CLOSE_WAIT
    assert peer.call("recv", sid, 100) == b"startend"
    assert peer.call("recv", sid, 100) == b""
    assert peer.take()[-1].ack == base + 9


def test_data_beyond_window_dropped():
    eng, sid, peer = established(rcvbuf=4096)
    base = peer.seq
    peer.send(ACK, b"x" * 100, seq=base + 5000)
    assert peer.take_one().ack == base
    assert peer.conn.recv_buffer.ooo_len == 0


def test_window_follows_free_buffer_and_right_edge_never_shrinks():
    eng, sid, peer = established(rcvbuf=8192)
    conn = peer.conn
    peer.send(ACK, b"x" * 1000)
    peer.send(ACK, b"y" * 1000)
    ack = peer.take()[-1]
    assert ack.window == 8192 - 2000
    edge = conn.rcv_adv
    peer.send(ACK, b"z" * 6192)                          # fills the buffer
    ack = peer.take()[-1]
    assert ack.window == 0 and conn.rcv_adv == edge
    # a peer that ignores the zero window: the byte is dropped, the ACK repeats the window
    peer.send(ACK, b"!")
    ack = peer.take_one()
    assert ack.window == 0 and ack.ack == peer.seq - 1
    peer.seq -= 1
    assert conn.recv_buffer.length == 8192


def test_rcvbuf_shrunk_below_queued_data_does_not_move_edge_left():
    eng, sid, peer = established(rcvbuf=8192)
    conn = peer.conn
    peer.send(ACK, b"x" * 3000)
    peer.advance(0.2)
    edge = conn.rcv_adv
    conn.so_rcvbuf = 2304                                # shrink under the feet of the peer
    peer.send(ACK, b"y" * 10)
    peer.advance(0.2)
    assert seqnum.ge(conn.rcv_adv, edge)


def test_window_update_after_read_follows_sws_avoidance():
    eng, sid, peer = established(rcvbuf=4000, mss=1000)
    conn = peer.conn
    for _ in range(4):
        peer.send(ACK, b"x" * 1000)
    peer.take()
    assert conn.rcv_wnd == 0
    peer.call("recv", sid, 500)                          # 500 free: less than an MSS, no update
    peer.expect_nothing()
    peer.call("recv", sid, 600)                          # 1100 free >= min(rcvbuf/2, MSS)
    upd = peer.take_one()
    assert upd.flags == ACK and upd.window == 1100
    assert eng.counters["window_updates"] == 1
    peer.call("recv", sid, 100)                          # window now more than half open: quiet
    peer.expect_nothing()


def test_receiver_sws_small_openings_not_advertised():
    eng, sid, peer = established(rcvbuf=4000, mss=1000)
    for _ in range(4):
        peer.send(ACK, b"x" * 1000)
    peer.take()
    peer.call("recv", sid, 200)
    peer.send(ACK)                                       # a probe-like ACK makes us answer... nothing owed
    peer.send(ACK, b"", seq=peer.seq - 1)                # keepalive-style: forces an ACK
    assert peer.take_one().window == 0                   # 200 bytes free: still offered as zero


def test_recv_peek_and_partial_reads():
    eng, sid, peer = established()
    peer.send(ACK, b"abc")
    peer.send(ACK, b"defgh")
    assert peer.call("recv", sid, 4, MSG_PEEK) == b"abcd"
    assert peer.call("recv", sid, 2) == b"ab"
    assert peer.call("recv", sid, 100, MSG_PEEK) == b"cdefgh"
    assert peer.call("recv", sid, 3) == b"cde"
    assert peer.call("recv", sid, 100) == b"fgh"
    assert peer.error_of("recv", sid, 100) == errno.EAGAIN


def test_urgent_flag_ignored_data_kept():
    eng, sid, peer = established()
    seg = peer.segment(ACK | URG, b"urgent?")
    peer.seq += 7
    peer.deliver(type(seg)(seg.src_port, seg.dst_port, seg.seq, seg.ack, seg.flags, seg.window, 3, seg.options, seg.payload))
    assert peer.call("recv", sid, 100) == b"urgent?"


def test_segment_without_ack_dropped():
    eng, sid, peer = established()
    peer.send(PSH, b"noack")
    peer.expect_nothing()
    assert peer.error_of("recv", sid, 10) == errno.EAGAIN


def test_unacceptable_sequence_gets_ack_and_is_dropped():
    eng, sid, peer = established()
    peer.send(ACK, b"far away", seq=peer.seq + 1_000_000, advance=False)
    ack = peer.take_one()
    assert ack.flags == ACK and ack.ack == peer.seq
    assert eng.counters["drop_outside_window"] == 1


def test_keepalive_style_old_segment_answered():
    eng, sid, peer = established()
    peer.send(ACK, seq=peer.seq - 1, advance=False)
    assert peer.take_one().ack == peer.seq
    peer.send(ACK, b"\0", seq=peer.seq - 1, advance=False)
    assert peer.take_one().ack == peer.seq
    assert peer.error_of("recv", sid, 10) == errno.EAGAIN


# ---------------------------------------------------------------- sending
def test_send_segments_to_peer_mss():
    eng, sid, peer = established(peer_kwargs={"mss": 536})
    assert peer.call("send", sid, b"x" * 2000) == 2000
    segs = peer.take()
    assert [len(s.payload) for s in segs] == [536, 536, 536, 392]
    assert segs[-1].flags & PSH and not segs[0].flags & PSH
    assert peer.received == b"x" * 2000


def test_send_mss_limited_by_our_own_mss():
    eng, sid, peer = established(mss=1000, peer_kwargs={"mss": 1460})
    assert peer.conn.send_mss == 1000
    assert peer.all_segments[0].options.mss == 1000


def test_initial_cwnd_ten_segments_then_slow_start():
    eng, sid, peer = established(peer_kwargs={"mss": 1000})
    peer.call("send", sid, b"x" * 30000)
    segs = peer.take()
    assert len(segs) == 10
    peer.send(ACK)                                       # ACKs all 10: cwnd grows by 2 MSS (ABC L=2)
    assert len(peer.take()) == 12


def test_send_limited_by_peer_window():
    eng, sid, peer = established(peer_kwargs={"window": 3000, "mss": 1000})
    peer.call("send", sid, b"x" * 10000)
    segs = peer.take()
    assert sum(len(s.payload) for s in segs) == 3000
    peer.send(ACK)
    assert sum(len(s.payload) for s in peer.take()) == 3000


def test_nagle_sends_the_tail_of_a_large_write_minshall():
    eng, sid, peer = established(peer_kwargs={"mss": 1000})
    peer.call("send", sid, b"x" * 2500)
    assert [len(s.payload) for s in peer.take()] == [1000, 1000, 500]
    peer.call("send", sid, b"y" * 10)                    # the 500-byte segment is unacknowledged: wait
    peer.expect_nothing()
    peer.send(ACK)
    assert peer.take_one().payload == b"y" * 10


def test_nagle_holds_small_segment_while_data_in_flight():
    eng, sid, peer = established()
    peer.call("send", sid, b"a")
    assert peer.take_one().payload == b"a"
    peer.call("send", sid, b"b")
    peer.call("send", sid, b"c")
    peer.expect_nothing()                                # Nagle: wait for the ACK
    peer.send(ACK)
    assert peer.take_one().payload == b"bc"


def test_nodelay_sends_small_segments_at_once():
    eng, sid, peer = established()
    peer.call("setsockopt", sid, 6, 1, 1)
    peer.call("send", sid, b"a")
    peer.call("send", sid, b"b")
    assert [s.payload for s in peer.take()] == [b"a", b"b"]


def test_setting_nodelay_pushes_held_data():
    eng, sid, peer = established()
    peer.call("send", sid, b"a")
    peer.call("send", sid, b"b")
    peer.take()
    peer.call("setsockopt", sid, 6, 1, 1)
    assert peer.take_one().payload == b"b"


def test_nagle_does_not_hold_full_segments():
    eng, sid, peer = established(peer_kwargs={"mss": 1000})
    peer.call("send", sid, b"a")
    peer.take()
    peer.call("send", sid, b"x" * 2500)
    assert [len(s.payload) for s in peer.take()] == [1000, 1000]     # the 500-byte tail waits
    peer.send(ACK)
    assert [len(s.payload) for s in peer.take()] == [500]


def test_sender_sws_avoidance_waits_for_useful_window():
    eng, sid, peer = established(peer_kwargs={"mss": 1000, "window": 10000})
    conn = peer.conn
    peer.call("send", sid, b"x" * 20000)
    peer.take()
    peer.send(ACK, window=300)                           # 10000 acked, only 300 bytes offered
    peer.expect_nothing()                                # 300 < max window / 2: wait
    assert conn.timers["persist"] is not None            # ... but not forever (override)
    peer.send(ACK, window=6000)
    segs = peer.take()
    assert sum(len(s.payload) for s in segs) == 6000


def test_sws_override_sends_small_window_when_persist_fires():
    eng, sid, peer = established(peer_kwargs={"mss": 1000, "window": 10000})
    peer.call("send", sid, b"x" * 20000)
    peer.take()
    peer.send(ACK, window=300)
    peer.expect_nothing()
    peer.run_timer("persist")
    seg = peer.take_one()
    assert len(seg.payload) == 300


def test_send_buffer_back_pressure_and_wakeup():
    eng, sid, peer = established(peer_kwargs={"window": 2000})
    peer.call("setsockopt", sid, 1, 7, 5000)             # SO_SNDBUF: 10000 as Linux doubles it, no autotuning
    assert peer.call("send", sid, b"x" * 15000) == 10000
    assert peer.error_of("send", sid, b"y") == errno.EAGAIN
    assert not eng.poll(sid) & POLLOUT
    peer.woken.clear()
    peer.take()
    peer.send(ACK, window=2000)                          # 2000 freed: 8000 queued, not yet writable
    assert sid not in peer.woken
    peer.take()
    peer.send(ACK, window=2000)                          # 6000 queued: 4000 free >= 6000 / 2
    peer.send(ACK, window=2000)
    assert sid in peer.woken
    assert eng.poll(sid) & POLLOUT
    assert peer.call("send", sid, b"y" * 10000) > 0


def test_send_credit_is_the_free_room_and_a_posted_send_is_queued_whole():
    eng, sid, peer = established(peer_kwargs={"window": 2000})
    peer.call("setsockopt", sid, 1, 7, 5000)             # SO_SNDBUF 10000
    assert eng.send_credit(sid) == 10000
    peer.call("send_posted", sid, b"x" * 9000)
    assert eng.send_credit(sid) == 1000
    peer.call("send_posted", sid, b"y" * 3000)           # another thread took the room first: still queued
    assert eng.send_credit(sid) == 0
    assert len(eng.conns[sid].send_buffer) == 12000
    sent = b"".join(seg.payload for seg in peer.take())
    assert 0 < len(sent) <= 2000 and sent == b"x" * len(sent)     # within the peer's window, in order


def test_no_credit_when_the_connection_cannot_send():
    eng, sid, peer = established()
    peer.call("shutdown", sid, 1)                        # SHUT_WR
    assert eng.send_credit(sid) == 0
    eng, sid, peer = established()
    peer.send(RST)
    assert eng.send_credit(sid) == 0
    assert eng.send_credit(12345) == 0


def test_posted_send_after_a_reset_is_dropped_and_the_error_stays_for_the_next_call():
    eng, sid, peer = established()
    peer.send(RST)
    peer.call("send_posted", sid, b"lost")              # libsock returned before the reset reached it
    assert eng.counters["posted_send_dropped"] == 1
    peer.expect_nothing()
    assert peer.error_of("recv", sid, 100) == errno.ECONNRESET


def test_send_zero_bytes():
    eng, sid, peer = established()
    assert peer.call("send", sid, b"") == 0
    peer.expect_nothing()


def test_ack_for_unsent_data_gets_ack_and_is_dropped():
    eng, sid, peer = established()
    peer.send(ACK, b"data", ack=peer.ack + 100)
    ack = peer.take_one()
    assert ack.ack == peer.seq - 4                       # the data was not taken
    assert eng.counters["drop_ack_unsent"] == 1


def test_too_old_ack_dropped_with_challenge():
    eng, sid, peer = established(peer_kwargs={"window": 1000})
    peer.call("send", sid, b"x" * 1000)
    peer.take()
    peer.send(ACK)
    peer.send(ACK, b"data", ack=peer.ack - 5000)
    assert peer.take_one().flags == ACK
    assert eng.counters["drop_ack_too_old"] == 1
    assert peer.error_of("recv", sid, 10) == errno.EAGAIN


def test_old_ack_within_max_window_is_fine():
    eng, sid, peer = established()
    peer.call("send", sid, b"x" * 100)
    peer.take()
    peer.send(ACK)
    peer.send(ACK, b"data", ack=peer.ack - 50)
    assert peer.call("recv", sid, 10) == b"data"


def test_window_update_rules_wl1_wl2():
    eng, sid, peer = established()
    conn = peer.conn
    peer.send(ACK, window=5000)
    assert conn.snd_wnd == 5000
    peer.send(ACK, seq=peer.seq - 1, window=100, advance=False)     # older segment: not a window update
    assert conn.snd_wnd == 5000


def test_fast_retransmit_on_three_duplicate_acks():
    eng, sid, peer = established(peer_kwargs={"mss": 1000}, congestion="reno")
    conn = peer.conn
    peer.call("send", sid, b"x" * 8000)
    segs = peer.take()
    first = segs[0].seq
    for _ in range(2):
        peer.send(ACK, ack=first)
    peer.expect_nothing()
    peer.send(ACK, ack=first)
    re = peer.take_one()
    assert re.seq == first and len(re.payload) == 1000
    assert conn.in_recovery and conn.ssthresh == 4000
    assert eng.counters["fast_retransmits"] == 1
    peer.send(ACK, ack=first + 3000)                     # partial ACK: next hole resent
    re2 = peer.take()
    assert re2[0].seq == first + 3000
    peer.send(ACK, ack=first + 8000)                     # full ACK ends recovery
    assert not conn.in_recovery and conn.cwnd <= conn.ssthresh


# ---------------------------------------------------------------- RFC 5961
def test_rst_exactly_at_rcv_nxt_resets():
    eng, sid, peer = established()
    peer.send(RST)
    conn = peer.conn
    assert conn.state is State.CLOSED
    assert sid in peer.woken
    assert eng.counters["estab_resets"] == 1
    assert peer.error_of("send", sid, b"x") == errno.ECONNRESET      # once
    assert peer.error_of("send", sid, b"x") == errno.EPIPE           # then EPIPE
    assert peer.call("recv", sid, 10) == b""


def test_recv_after_reset_reports_econnreset_once():
    eng, sid, peer = established()
    peer.send(ACK, b"last words")
    peer.send(RST)
    assert peer.call("recv", sid, 100) == b"last words"
    assert peer.error_of("recv", sid, 100) == errno.ECONNRESET
    assert peer.call("recv", sid, 100) == b""


def test_rst_in_window_but_not_exact_gets_challenge_ack():
    eng, sid, peer = established()
    peer.send(RST, seq=peer.seq + 10, advance=False)
    ack = peer.take_one()
    assert ack.flags == ACK and ack.ack == peer.seq
    assert peer.conn.state is State.ESTABLISHED
    assert eng.counters["challenge_acks"] == 1


def test_rst_outside_window_silently_dropped():
    eng, sid, peer = established()
    peer.send(RST, seq=peer.seq + 10_000_000, advance=False)
    peer.send(RST, seq=peer.seq - 10, advance=False)
    peer.expect_nothing()
    assert peer.conn.state is State.ESTABLISHED


@pytest.mark.parametrize("offset", [0, 5, -5, 10_000_000])
def test_any_syn_gets_challenge_ack(offset):
    eng, sid, peer = established()
    peer.send(SYN, seq=peer.seq + offset, advance=False)
    ack = peer.take_one()
    assert ack.flags == ACK and ack.ack == peer.seq
    assert peer.conn.state is State.ESTABLISHED


def test_challenge_acks_rate_limited():
    eng, sid, peer = established(challenge_ack_limit=3)
    for _ in range(5):
        peer.send(SYN, seq=peer.seq, advance=False)
    assert len(peer.take()) == 3
    assert eng.counters["challenge_acks"] == 3 and eng.counters["challenge_acks_limited"] == 2
    peer.advance(1.0)
    peer.send(SYN, seq=peer.seq, advance=False)
    assert len(peer.take()) == 1


# ---------------------------------------------------------------- closing from ESTABLISHED
def test_peer_fin_moves_to_close_wait_and_is_acked_at_once():
    eng, sid, peer = established()
    peer.send(ACK | FIN, b"bye")
    ack = peer.take_one()
    assert ack.ack == peer.seq
    assert peer.conn.state is State.CLOSE_WAIT
    assert eng.poll(sid) & POLLIN
    assert peer.call("recv", sid, 10) == b"bye"
    assert peer.call("recv", sid, 10) == b""


def test_close_sends_fin_and_moves_to_fin_wait_1():
    eng, sid, peer = established()
    peer.call("close", sid)
    fin = peer.take_one()
    assert fin.flags == ACK | FIN
    assert peer.conn.state is State.FIN_WAIT_1
    t = peer.transitions[-1]
    assert (t.from_state, t.to_state) == (State.ESTABLISHED, State.FIN_WAIT_1)


def test_fin_follows_queued_data():
    eng, sid, peer = established(peer_kwargs={"window": 1000})
    peer.call("send", sid, b"x" * 2500)
    peer.take()
    peer.call("close", sid)
    peer.expect_nothing()                                # window full: FIN waits behind the data
    assert peer.conn.state is State.FIN_WAIT_1
    peer.send(ACK)
    peer.send(ACK)
    peer.take()
    peer.send(ACK)
    assert peer.received == b"x" * 2500
    assert peer.all_segments[-1].flags & FIN             # piggybacked on the last data


def test_close_with_unread_data_sends_rst():
    eng, sid, peer = established()
    peer.send(ACK, b"unread")
    peer.take()
    peer.call("close", sid)
    rst = peer.take_one()
    assert rst.flags & RST and rst.seq == peer.ack
    assert peer.conn.state is State.CLOSED and peer.conn.id not in eng.conns
    assert eng.counters["abort_on_close"] == 1


def test_linger_zero_close_sends_rst():
    eng, sid, peer = established()
    peer.call("setsockopt", sid, 1, 13, (1, 0))
    peer.call("send", sid, b"pending")
    peer.take()
    peer.call("close", sid)
    rst = peer.take_one()
    assert rst.flags & RST
    assert peer.conn.id not in eng.conns
    assert eng.counters["abort_on_linger"] == 1


def test_linger_nonzero_closes_normally():
    eng, sid, peer = established()
    peer.call("setsockopt", sid, 1, 13, (1, 5))
    peer.call("close", sid)
    assert peer.take_one().flags == ACK | FIN


def test_shutdown_wr_half_close():
    eng, sid, peer = established()
    peer.call("shutdown", sid, 1)
    assert peer.take_one().flags & FIN
    assert peer.error_of("send", sid, b"x") == errno.EPIPE
    peer.send(ACK, b"still talking")
    assert peer.call("recv", sid, 100) == b"still talking"
    assert peer.conn.state is State.FIN_WAIT_2


def test_shutdown_rd_then_recv_returns_eof():
    eng, sid, peer = established()
    peer.call("shutdown", sid, 0)
    assert peer.call("recv", sid, 10) == b""
    assert peer.call("send", sid, b"x") == 1
    assert peer.conn.state is State.ESTABLISHED


def test_getpeername_and_getsockname():
    eng, sid, peer = established()
    assert peer.call("getpeername", sid) == (PEER_ADDR, peer.port)
    assert peer.call("getsockname", sid)[1] == peer.engine_port


# ---------------------------------------------------------------- window scaling
def test_window_scaling_lets_buffers_above_64k_be_used():
    eng, sid, peer = established(rcvbuf=1 << 20, peer_kwargs={"wscale": 7, "window": 8000})
    conn = peer.conn
    assert conn.rcv_wscale == 7 and conn.snd_wscale == 7   # ours chosen for the 6 MiB autotuning ceiling
    peer.send(ACK, b"x" * 1000)
    peer.advance(0.2)
    ack = peer.take_one()
    assert ack.window == -(-((1 << 20) - 1000) // 128)  # rounded up: the offered edge never moves left
    assert conn.snd_wnd == 8000 << 7                     # 1 MiB: more than 64 KiB usable
    peer.call("send", sid, b"y" * 200_000)
    assert sum(len(s.payload) for s in peer.take()) == 14600   # limited by cwnd, not a 64 KiB window


def test_scaled_window_rounded_up_rather_than_shrinking():
    eng, sid, peer = established(rcvbuf=1 << 20, peer_kwargs={"wscale": 0})
    conn = peer.conn
    peer.send(ACK, b"x" * 100)
    peer.advance(0.2)
    ack = peer.take_one()
    assert seqnum.ge((ack.ack + (ack.window << conn.rcv_wscale)) & seqnum.MASK, conn.rcv_adv)


def test_unsized_send_buffer_grows_to_two_congestion_windows():
    eng, sid, peer = established(sndbuf=10000, peer_kwargs={"window": 60000})
    conn = eng.conns[sid]
    assert peer.call("send", sid, b"x" * 50000) == 10000
    peer.take()
    peer.send(ACK, ack=conn.snd_max, window=60000)
    assert conn.so_sndbuf == 2 * conn.cwnd > 10000          # Linux tcp_sndbuf_expand
    assert peer.call("send", sid, b"x" * 50000) > 0


def test_unsized_receive_buffer_grows_with_what_the_reader_takes():
    eng, sid, peer = established(rcvbuf=20000, peer_kwargs={"wscale": 7})
    conn = eng.conns[sid]
    assert conn.rcv_wscale == 7                              # chosen for the 6 MiB ceiling
    conn.rtt.srtt = 0.01
    for _ in range(3):
        peer.send(ACK | PSH, b"d" * 1000)
        peer.advance(0.02)
        peer.call("recv", sid, 100000)
    assert conn.so_rcvbuf == 20000                          # 2 x 1000 read per round trip: no need
    for _ in range(30):                                      # more than the window: what fits is queued
        peer.send(ACK | PSH, b"d" * 1000)
    peer.advance(0.02)
    read = len(peer.call("recv", sid, 100000))
    assert read > 10000
    assert conn.so_rcvbuf == 2 * read > 20000                # tcp_rcv_space_adjust


def test_sized_buffers_do_not_grow():
    eng, sid, peer = established(peer_kwargs={"window": 60000})
    peer.call("setsockopt", sid, 1, 7, 5000)
    peer.call("setsockopt", sid, 1, 8, 5000)
    conn = eng.conns[sid]
    peer.call("send", sid, b"x" * 50000)
    peer.take()
    peer.send(ACK, ack=conn.snd_max, window=60000)
    assert (conn.so_sndbuf, conn.so_rcvbuf) == (10000, 10000)
