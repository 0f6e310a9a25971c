"""RecvBuffer on its own: in-order bytes, the out-of-order queue, SACK blocks, autotuning."""
from __future__ import annotations

from proto.tcp.rcvbuf import RCVBUF_AUTOTUNE_MAX, RecvBuffer, choose_wscale

MASK = 0xFFFFFFFF


def test_take_and_peek_across_chunks():
    buf = RecvBuffer()
    for chunk in (b"hello ", b"wide ", b"world"):
        buf.append(chunk)
    assert len(buf) == 16
    assert buf.peek(8) == b"hello wi" and len(buf) == 16          # a peek takes nothing
    assert buf.take(3) == b"hel" and buf.offset == 3
    assert buf.take(5) == b"lo wi"                                 # the rest of one chunk, part of the next
    assert buf.peek(100) == b"de world"
    assert buf.take(100) == b"de world" and len(buf) == 0 and not buf.chunks


def test_discard_drops_the_unread_bytes():
    buf = RecvBuffer()
    buf.append(b"abc")
    buf.take(1)
    buf.discard()
    assert len(buf) == 0 and buf.offset == 0 and not buf.chunks


def test_out_of_order_keeps_only_new_bytes_and_delivers_in_order():
    buf = RecvBuffer()
    nxt = MASK - 4                                   # across the wrap of sequence space
    buf.insert_out_of_order(nxt, (nxt + 10) & MASK, b"KLMNO")
    buf.insert_out_of_order(nxt, (nxt + 8) & MASK, b"IJKLMNOPQ")      # overlaps on both sides
    assert [len(d) for _, d in buf.ooo] == [2, 5, 2] and buf.ooo_len == 9
    assert buf.deliver_out_of_order(nxt) == 0       # still a hole at RCV.NXT
    buf.append(b"ABCDEFGH")                          # the hole, in order
    assert buf.deliver_out_of_order((nxt + 8) & MASK) == 9
    assert buf.take(100) == b"ABCDEFGHIJKLMNOPQ" and buf.ooo == [] and buf.ooo_len == 0


def test_sack_blocks_latest_first_then_highest_down():
    buf = RecvBuffer()
    buf.insert_out_of_order(1000, 1100, b"x" * 100)
    buf.insert_out_of_order(1000, 1500, b"x" * 100)
    buf.insert_out_of_order(1000, 1300, b"x" * 100)
    buf.insert_out_of_order(1000, 1200, b"x" * 100)     # joins 1100-1200 and 1300-1400
    assert buf.sack_blocks() == ((1100, 1400), (1500, 1600))


def test_autotune_grows_to_twice_a_round_trips_reading_and_no_further_than_the_cap():
    buf = RecvBuffer()
    assert buf.autotune(0.0, 50_000, None, 65536) == 65536        # no RTT yet: nothing to go by
    assert buf.autotune(0.05, 50_000, 0.1, 65536) == 65536        # within the round trip
    assert buf.autotune(0.2, 50_000, 0.1, 65536) == 300_000       # 2 x the 150,000 read so far (DRS)
    assert buf.autotune(1.0, 10 * RCVBUF_AUTOTUNE_MAX, 0.1, 150_000) == RCVBUF_AUTOTUNE_MAX


def test_window_scale_covers_the_buffer():
    assert choose_wscale(65535) == 0 and choose_wscale(65536) == 1
    assert choose_wscale(RCVBUF_AUTOTUNE_MAX) == 7 and choose_wscale(1 << 40) == 14
