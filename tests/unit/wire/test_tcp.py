"""proto/wire/tcp.py: parse and build TCP segments, options, checksum."""
import struct

import pytest
from hypothesis import given, strategies as st

from proto.wire.tcp import (TcpFlags, TcpOptions, TcpParseError, TcpSegment, build_tcp,
                            parse_tcp)

SRC = bytes([198, 18, 0, 1])
DST = bytes([198, 18, 0, 2])


def word_sum_checksum(data: bytes, src: bytes, dst: bytes) -> int:
    """An independent, slow RFC 1071 checksum over pseudo-header + segment."""
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(data))
    blob = pseudo + data + (b"\0" if len(data) % 2 else b"")
    total = sum(struct.unpack("!%dH" % (len(blob) // 2), blob))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def raw_header(sport=1234, dport=80, seq=1, ack=0, offset_words=5, flags=0x02, window=1000,
               options=b"", payload=b"", checksum=None):
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, offset_words << 4, flags, window, 0, 0) + options
    data = hdr + payload
    csum = word_sum_checksum(data, SRC, DST) if checksum is None else checksum
    return data[:16] + struct.pack("!H", csum) + data[18:]


def test_build_matches_independent_checksum_and_layout():
    seg = TcpSegment(40000, 80, 0x01020304, 0x0A0B0C0D, TcpFlags.ACK | TcpFlags.PSH, 512, payload=b"hello")
    data = build_tcp(seg, SRC, DST)
    assert len(data) == 20 + 5
    sport, dport, seq, ack, off, flags, win, csum, urg = struct.unpack("!HHIIBBHHH", data[:20])
    assert (sport, dport, seq, ack, off >> 4, flags, win, urg) == (40000, 80, 0x01020304, 0x0A0B0C0D, 5, 0x18, 512, 0)
    zeroed = data[:16] + b"\0\0" + data[18:]
    assert csum == word_sum_checksum(zeroed, SRC, DST)


@pytest.mark.parametrize("payload", [b"", b"x", b"odd-length!", bytes(range(256)) * 6])
def test_round_trip_payloads(payload):
    seg = TcpSegment(1, 2, 3, 4, TcpFlags.ACK, 5, payload=payload)
    assert parse_tcp(build_tcp(seg, SRC, DST), SRC, DST) == seg


def test_round_trip_all_options():
    opts = TcpOptions(mss=1460, window_scale=7, sack_permitted=True, timestamps=(123, 456),
                      sack_blocks=((10, 20), (30, 40)))
    seg = TcpSegment(1, 2, 3, 4, TcpFlags.SYN | TcpFlags.ACK, 5, options=opts)
    data = build_tcp(seg, SRC, DST)
    assert (len(data) - 20) % 4 == 0 and len(data) <= 60
    assert parse_tcp(data, SRC, DST) == seg


@pytest.mark.parametrize("opts", [
    TcpOptions(mss=536), TcpOptions(window_scale=0), TcpOptions(sack_permitted=True),
    TcpOptions(timestamps=(1, 2)), TcpOptions(sack_blocks=((1, 2),)), TcpOptions(mss=1460, window_scale=14),
])
def test_round_trip_each_option(opts):
    seg = TcpSegment(1, 2, 3, 4, TcpFlags.SYN, 5, options=opts)
    assert parse_tcp(build_tcp(seg, SRC, DST), SRC, DST).options == opts


def test_no_options_means_twenty_byte_header():
    assert len(build_tcp(TcpSegment(1, 2, 3, 4, TcpFlags.ACK, 5), SRC, DST)) == 20


def test_truncated():
    with pytest.raises(TcpParseError) as e:
        parse_tcp(b"\0" * 19, SRC, DST)
    assert e.value.reason == "truncated"


def test_data_offset_beyond_data_is_truncated():
    with pytest.raises(TcpParseError) as e:
        parse_tcp(raw_header(offset_words=8), SRC, DST)
    assert e.value.reason == "truncated"


def test_bad_data_offset():
    with pytest.raises(TcpParseError) as e:
        parse_tcp(raw_header(offset_words=4), SRC, DST)
    assert e.value.reason == "bad_data_offset"


def test_bad_checksum():
    data = bytearray(build_tcp(TcpSegment(1, 2, 3, 4, TcpFlags.ACK, 5, payload=b"abc"), SRC, DST))
    data[-1] ^= 0xFF
    with pytest.raises(TcpParseError) as e:
        parse_tcp(bytes(data), SRC, DST)
    assert e.value.reason == "bad_checksum"
    # the wrong pseudo-header also fails
    with pytest.raises(TcpParseError):
        parse_tcp(build_tcp(TcpSegment(1, 2, 3, 4, TcpFlags.ACK, 5), SRC, DST), SRC, bytes([10, 0, 0, 1]))


def test_checksum_not_verified_when_asked():
    data = raw_header(checksum=0x1234)
    assert parse_tcp(data, SRC, DST, verify_checksum=False).flags == TcpFlags.SYN


def test_unknown_option_skipped_by_length():
    opts = bytes([99, 6, 1, 2, 3, 4]) + bytes([2, 4, 0x05, 0xB4])        # unknown kind 99, then MSS 1460
    seg = parse_tcp(raw_header(offset_words=8, options=opts + b"\0\0"), SRC, DST)
    assert seg.options.mss == 1460


def test_nop_and_eol():
    opts = bytes([1, 1, 1, 3, 3, 5, 0, 2, 4, 0, 0, 0])     # NOPs, wscale 5, EOL, then garbage after EOL
    seg = parse_tcp(raw_header(offset_words=8, options=opts), SRC, DST)
    assert seg.options.window_scale == 5 and seg.options.mss is None


def test_mss_option_exactly_filling_the_options():
    assert parse_tcp(raw_header(offset_words=6, options=bytes([2, 4, 5, 0])), SRC, DST).options.mss == 0x500


@pytest.mark.parametrize("opts", [
    bytes([2, 1, 0, 0]),                 # length < 2
    bytes([2, 8, 0, 0]),                 # length past the end of the options
    bytes([2, 3, 0, 0]),                 # MSS with a wrong length
    bytes([3, 4, 7, 0]),                 # window scale with a wrong length
    bytes([1, 1, 1, 99]),                # kind with no length byte
    bytes([5, 6, 0, 0, 0, 0, 0, 0]),     # SACK not a multiple of 8
    bytes([8, 8, 0, 0, 0, 0, 0, 0]),     # timestamps with a wrong length
])
def test_malformed_option_lengths(opts):
    with pytest.raises(TcpParseError) as e:
        parse_tcp(raw_header(offset_words=5 + len(opts) // 4, options=opts), SRC, DST)
    assert e.value.reason == "bad_option"


def test_payload_and_flags_parsed():
    data = raw_header(flags=0x19, payload=b"data!")      # FIN PSH ACK
    seg = parse_tcp(data, SRC, DST)
    assert seg.flags == TcpFlags.FIN | TcpFlags.PSH | TcpFlags.ACK
    assert seg.payload == b"data!" and seg.seg_len == 6


def test_options_too_long_rejected_by_build():
    opts = TcpOptions(mss=1, window_scale=1, sack_permitted=True, timestamps=(1, 1),
                      sack_blocks=((1, 2), (3, 4), (5, 6), (7, 8)))
    with pytest.raises(ValueError):
        build_tcp(TcpSegment(1, 2, 3, 4, TcpFlags.ACK, 5, options=opts), SRC, DST)


u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


@given(sport=u16, dport=u16, seq=u32, ack=u32, flags=st.integers(0, 255), window=u16, urgent=u16,
       mss=st.none() | u16, ws=st.none() | st.integers(0, 14), sackp=st.booleans(),
       ts=st.none() | st.tuples(u32, u32), payload=st.binary(max_size=300))
def test_round_trip_property(sport, dport, seq, ack, flags, window, urgent, mss, ws, sackp, ts, payload):
    seg = TcpSegment(sport, dport, seq, ack, TcpFlags(flags), window, urgent,
                     TcpOptions(mss=mss, window_scale=ws, sack_permitted=sackp, timestamps=ts), payload)
    data = build_tcp(seg, SRC, DST)
    assert word_sum_checksum(data, SRC, DST) == 0
    assert parse_tcp(data, SRC, DST) == seg


@given(st.binary(max_size=80))
def test_garbage_never_raises_anything_but_parse_error(blob):
    try:
        parse_tcp(blob, SRC, DST, verify_checksum=False)
    except TcpParseError:
        pass
