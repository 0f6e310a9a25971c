"""The IPv4 header codec: round trips, every malformed form, addresses."""
import pytest
from hypothesis import given, strategies as st

from proto.wire.checksum import ones_complement_sum
from proto.wire.ipv4 import (
    PROTO_ICMP, PROTO_TCP, PROTO_UDP, Ipv4Flags, Ipv4Header, Ipv4ParseError, addr_to_str,
    build_ipv4, build_ipv4_header, is_unicast_source, parse_ipv4, str_to_addr,
)

SRC = bytes([198, 18, 0, 1])
DST = bytes([198, 18, 0, 2])


def fix_checksum(packet: bytes | bytearray) -> bytes:
    """Recompute the header checksum of a hand-edited packet."""
    packet = bytearray(packet)
    header_length = (packet[0] & 0x0F) * 4
    packet[10:12] = b"\0\0"
    checksum = ~ones_complement_sum(packet[:header_length]) & 0xFFFF
    packet[10:12] = checksum.to_bytes(2, "big")
    return bytes(packet)


def test_constants():
    assert (PROTO_ICMP, PROTO_TCP, PROTO_UDP) == (1, 6, 17)


def test_build_then_parse_round_trip():
    packet = build_ipv4(SRC, DST, PROTO_TCP, b"segment", ttl=33, ident=0x1234, tos=0x10)
    header, payload = parse_ipv4(packet)
    assert bytes(payload) == b"segment"
    assert header.src == SRC and header.dst == DST
    assert header.protocol == PROTO_TCP and header.ttl == 33 and header.ident == 0x1234
    assert header.tos == 0x10
    assert header.flags == Ipv4Flags.DF and header.dont_fragment and not header.more_fragments
    assert header.frag_offset == 0 and not header.is_fragment
    assert header.total_length == 20 + 7 == len(packet)
    assert header.header_length == 20 and header.payload_length == 7
    assert header.options == b""


def test_known_bytes():
    # A header worked by hand: 45 00 0014 0000 4000 40 06 csum c6120001 c6120002.
    packet = build_ipv4(SRC, DST, PROTO_TCP, b"", ident=0)
    assert packet[:10] == bytes.fromhex("45000014000040004006")
    assert packet[12:] == SRC + DST
    assert ones_complement_sum(packet) == 0xFFFF


def test_fragment_fields_round_trip():
    packet = build_ipv4(SRC, DST, PROTO_UDP, b"x" * 16, df=False, mf=True, frag_offset=1480)
    header, _ = parse_ipv4(packet)
    assert header.flags == Ipv4Flags.MF and header.more_fragments and not header.dont_fragment
    assert header.frag_offset == 1480 and header.is_fragment


def test_options_round_trip():
    options = bytes([0x94, 4, 0, 0])            # Router Alert (RFC 2113), copied flag set
    packet = build_ipv4(SRC, DST, PROTO_TCP, b"data", options=options)
    header, payload = parse_ipv4(packet)
    assert header.options == options and header.header_length == 24
    assert bytes(payload) == b"data"
    assert packet[0] == 0x46


def test_build_ipv4_header_reproduces_received_header():
    packet = build_ipv4(SRC, DST, PROTO_ICMP, b"12345678abc", ttl=7, ident=99, df=False)
    header, _ = parse_ipv4(packet)
    assert build_ipv4_header(header) == packet[:20]


@given(src=st.binary(min_size=4, max_size=4), dst=st.binary(min_size=4, max_size=4),
       protocol=st.integers(0, 255), payload=st.binary(max_size=300), ttl=st.integers(0, 255),
       ident=st.integers(0, 0xFFFF), df=st.booleans(), mf=st.booleans(),
       offset_units=st.integers(0, 0x1FFF), tos=st.integers(0, 255),
       option_words=st.integers(0, 10))
def test_round_trip_property(src, dst, protocol, payload, ttl, ident, df, mf, offset_units, tos,
                             option_words):
    options = b"\x01" * (4 * option_words)      # NOPs
    packet = build_ipv4(src, dst, protocol, payload, ttl=ttl, ident=ident, df=df, mf=mf,
                        frag_offset=offset_units * 8, tos=tos, options=options)
    header, parsed_payload = parse_ipv4(packet)
    assert bytes(parsed_payload) == payload
    assert (header.src, header.dst, header.protocol, header.ttl, header.ident, header.tos) == \
        (src, dst, protocol, ttl, ident, tos)
    assert header.dont_fragment == df and header.more_fragments == mf
    assert header.frag_offset == offset_units * 8
    assert header.options == options
    assert build_ipv4_header(header) == packet[:header.header_length]


def test_trailing_padding_is_stripped():
    packet = build_ipv4(SRC, DST, PROTO_TCP, b"abc") + b"\0" * 7
    header, payload = parse_ipv4(packet)
    assert bytes(payload) == b"abc" and header.total_length == 23


def test_payload_is_a_view_not_a_copy():
    packet = build_ipv4(SRC, DST, PROTO_TCP, b"abc")
    _, payload = parse_ipv4(packet)
    assert isinstance(payload, memoryview) and payload.obj is packet


def test_accepts_bytearray_and_memoryview():
    packet = build_ipv4(SRC, DST, PROTO_TCP, b"abc")
    for form in (bytearray(packet), memoryview(packet)):
        header, payload = parse_ipv4(form)
        assert header.src == SRC and bytes(payload) == b"abc"


# ---- every malformed form, with its reason -------------------------------------

def reason_of(packet) -> str:
    with pytest.raises(Ipv4ParseError) as caught:
        parse_ipv4(packet)
    return caught.value.reason


GOOD = build_ipv4(SRC, DST, PROTO_TCP, b"0123456789")


def test_empty_is_truncated():
    assert reason_of(b"") == "truncated"


def test_shorter_than_a_header_is_truncated():
    assert reason_of(GOOD[:19]) == "truncated"
    assert reason_of(b"\x45") == "truncated"


def test_bad_version():
    assert reason_of(fix_checksum(b"\x55" + GOOD[1:])) == "bad_version"
    assert reason_of(b"\x60" + GOOD[1:]) == "bad_version"     # IPv6
    assert reason_of(b"\x00") == "bad_version"


def test_header_length_below_five_words():
    for ihl in range(5):
        assert reason_of(bytes([0x40 | ihl]) + GOOD[1:]) == "bad_header_length"


def test_header_length_beyond_the_packet_is_truncated():
    assert reason_of(fix_checksum(b"\x4f" + GOOD[1:])[:40]) == "truncated"


def test_total_length_below_header_length():
    packet = bytearray(GOOD)
    packet[2:4] = (19).to_bytes(2, "big")
    assert reason_of(fix_checksum(packet)) == "bad_total_length"


def test_total_length_beyond_the_packet_is_truncated():
    packet = bytearray(GOOD)
    packet[2:4] = (len(GOOD) + 1).to_bytes(2, "big")
    assert reason_of(fix_checksum(packet)) == "truncated"


def test_bad_checksum():
    packet = bytearray(GOOD)
    packet[8] ^= 0x01                           # the TTL changes, the checksum does not
    assert reason_of(packet) == "bad_checksum"


def test_error_is_a_value_error_with_reason():
    error = Ipv4ParseError("truncated")
    assert isinstance(error, ValueError) and error.reason == "truncated"


@given(st.binary(max_size=80))
def test_random_bytes_parse_or_raise_parse_error(data):
    try:
        header, payload = parse_ipv4(data)
    except Ipv4ParseError as error:
        assert error.reason in {"truncated", "bad_version", "bad_header_length",
                                "bad_total_length", "bad_checksum"}
    else:
        assert header.header_length + len(payload) == header.total_length <= len(data)


# ---- build refuses what cannot be sent -------------------------------------------

@pytest.mark.parametrize("kwargs", [
    {"src": b"\0" * 3}, {"dst": b"\0" * 5}, {"payload": b"x" * 65516},
    {"frag_offset": 3}, {"frag_offset": 65536}, {"options": b"\x01"}, {"options": b"\x01" * 44},
])
def test_build_rejects_impossible_fields(kwargs):
    arguments = {"src": SRC, "dst": DST, "protocol": PROTO_TCP, "payload": b""} | kwargs
    with pytest.raises(ValueError):
        build_ipv4(**arguments)


def test_largest_datagram_builds():
    packet = build_ipv4(SRC, DST, PROTO_TCP, b"x" * 65515)
    assert len(packet) == 65535 and parse_ipv4(packet)[0].total_length == 65535


def test_header_dataclass_is_frozen():
    header, _ = parse_ipv4(GOOD)
    assert isinstance(header, Ipv4Header)
    with pytest.raises(AttributeError):
        header.ttl = 1


# ---- addresses -------------------------------------------------------------------

def test_address_text_round_trip():
    assert str_to_addr("198.18.0.2") == DST
    assert addr_to_str(DST) == "198.18.0.2"
    assert addr_to_str(str_to_addr("0.0.0.0")) == "0.0.0.0"
    assert addr_to_str(str_to_addr("255.255.255.255")) == "255.255.255.255"


@given(st.binary(min_size=4, max_size=4))
def test_address_round_trip_property(address):
    assert str_to_addr(addr_to_str(address)) == address


@pytest.mark.parametrize("text", [
    "", "1.2.3", "1.2.3.4.5", "256.0.0.1", "1.2.3.-4", "1.2.3.+4", "01.2.3.4", "1.2.3.4 ",
    " 1.2.3.4", "1..3.4", "a.b.c.d", "1.2.3.٣", "1.2.3.0x4", "1.2.3.1000",
])
def test_bad_address_text_rejected(text):
    with pytest.raises(ValueError):
        str_to_addr(text)


@pytest.mark.parametrize("address", [b"", b"\0\0\0", b"\0" * 5])
def test_bad_address_bytes_rejected(address):
    with pytest.raises(ValueError):
        addr_to_str(address)


@pytest.mark.parametrize("text,unicast", [
    ("198.18.0.1", True), ("10.0.0.1", True), ("0.0.0.0", False), ("0.1.2.3", False),
    ("127.0.0.1", False), ("224.0.0.1", False), ("239.1.1.1", False), ("240.0.0.1", False),
    ("255.255.255.255", False),
])
def test_unicast_source(text, unicast):
    assert is_unicast_source(str_to_addr(text)) is unicast
