"""Receive coalescing: which segments of a batch merge, and what tcpd then sees."""
from proto.ip.gro import coalesce
from proto.wire.tcp import TcpFlags, TcpSegment, build_tcp, parse_tcp

A, B = b"\xc6\x12\x00\x01", b"\xc6\x12\x00\x02"
ACK, PSH, FIN = TcpFlags.ACK, TcpFlags.PSH, TcpFlags.FIN


def seg(seq: int, payload: bytes, flags=ACK, ack: int = 500, window: int = 1000, sport: int = 4000) -> tuple:
    return (A, B, build_tcp(TcpSegment(sport, 80, seq, ack, flags, window, payload=payload), A, B))


def test_a_run_of_in_order_segments_becomes_one_vouched_for_segment():
    batch = [seg(1000, b"a" * 100), seg(1100, b"b" * 100), seg(1200, b"c" * 40, ACK | PSH)]
    out, trusted = coalesce(batch, set())
    assert len(out) == 1 and trusted == [0]
    merged = parse_tcp(out[0][2], A, B, verify_checksum=False)
    assert merged.seq == 1000 and merged.payload == b"a" * 100 + b"b" * 100 + b"c" * 40
    assert merged.flags == ACK | PSH and merged.ack == 500 and merged.window == 1000


def test_what_does_not_merge():
    batch = [seg(1000, b"a" * 100), seg(1200, b"b" * 100),                    # a hole
             seg(1300, b"c" * 100, ack=501),                                   # another ack
             seg(1400, b"d" * 100, window=999),                                # another window
             seg(1500, b"e" * 100, sport=4001),                                # another connection
             seg(1600, b"f" * 100, ACK | FIN),                                 # FIN: control
             seg(1700, b"")]                                                   # a pure ACK
    out, trusted = coalesce(batch, set())
    assert [o[2] for o in out] == [b[2] for b in batch] and trusted == [0, 1, 2, 3, 4]


def test_a_short_segment_ends_a_run_and_psh_starts_none():
    batch = [seg(0, b"a" * 100), seg(100, b"b" * 50), seg(150, b"c" * 50),
             seg(200, b"d" * 10, ACK | PSH), seg(210, b"e" * 10)]
    out, _ = coalesce(batch, set())
    assert [parse_tcp(o[2], A, B, verify_checksum=False).payload for o in out] == \
        [b"a" * 100 + b"b" * 50, b"c" * 50 + b"d" * 10, b"e" * 10]


def test_a_bad_checksum_is_passed_on_unvouched_and_breaks_the_run():
    bad = bytearray(seg(100, b"b" * 100)[2])
    bad[-1] ^= 0xFF
    batch = [seg(0, b"a" * 100), (A, B, bytes(bad)), seg(200, b"c" * 100)]
    out, trusted = coalesce(batch, set())
    assert [o[2] for o in out] == [batch[0][2], bytes(bad), batch[2][2]] and trusted == [0, 2]
    out, trusted = coalesce(batch, {1})               # the device vouched for it: not summed, merged
    assert len(out) == 1 and trusted == [0]
