"""The ICMP codec: echo, destination unreachable, time exceeded, quoting."""
import pytest
from hypothesis import given, strategies as st

from proto.wire.checksum import ones_complement_sum
from proto.wire.icmp import (
    IcmpMessage, IcmpParseError, IcmpType, TimeExceededCode, UnreachableCode, build_dest_unreachable,
    build_echo_reply, build_echo_request, build_icmp, build_time_exceeded, is_error_type,
    parse_icmp, parse_quoted_datagram, quote_offending_datagram,
)
from proto.wire.ipv4 import PROTO_TCP, PROTO_UDP, build_ipv4

SRC = bytes([198, 18, 0, 1])
DST = bytes([198, 18, 0, 2])


def test_echo_request_round_trip():
    data = build_echo_request(0xBEEF, 7, b"ping data")
    message = parse_icmp(data)
    assert message.type == IcmpType.ECHO_REQUEST and message.code == 0
    assert message.identifier == 0xBEEF and message.sequence == 7
    assert message.body == b"ping data"
    assert not message.is_error


def test_echo_reply_round_trip():
    message = parse_icmp(build_echo_reply(1, 65535, b"odd"))
    assert (message.type, message.identifier, message.sequence, message.body) == \
        (IcmpType.ECHO_REPLY, 1, 65535, b"odd")


def test_known_echo_bytes():
    # Type 8, code 0, id 1, seq 1, no data: checksum ~(0x0800 + 1 + 1) = 0xF7FD.
    assert build_echo_request(1, 1) == bytes.fromhex("0800f7fd00010001")


@given(identifier=st.integers(0, 0xFFFF), sequence=st.integers(0, 0xFFFF),
       data=st.binary(max_size=200))
def test_echo_property(identifier, sequence, data):
    for build in (build_echo_request, build_echo_reply):
        packet = build(identifier, sequence, data)
        assert ones_complement_sum(packet) == 0xFFFF
        message = parse_icmp(packet)
        assert (message.identifier, message.sequence, message.body) == (identifier, sequence, data)


def test_protocol_unreachable_quotes_header_and_eight_bytes():
    offending = build_ipv4(SRC, DST, PROTO_UDP, b"ABCDEFGHIJKLMNOP")
    message = parse_icmp(build_dest_unreachable(UnreachableCode.PROTOCOL, offending))
    assert message.type == IcmpType.DEST_UNREACHABLE and message.code == 2
    assert message.rest_of_header == 0
    assert message.body == offending[:28]
    assert message.is_error


def test_port_unreachable_code():
    offending = build_ipv4(SRC, DST, PROTO_UDP, b"12345678")
    assert parse_icmp(build_dest_unreachable(UnreachableCode.PORT, offending)).code == 3


def test_fragmentation_needed_carries_mtu():
    offending = build_ipv4(SRC, DST, PROTO_TCP, b"x" * 100)
    message = parse_icmp(build_dest_unreachable(UnreachableCode.FRAGMENTATION_NEEDED, offending,
                                                next_hop_mtu=1400))
    assert message.code == 4 and message.next_hop_mtu == 1400


def test_time_exceeded_reassembly():
    offending = build_ipv4(SRC, DST, PROTO_TCP, b"y" * 40, df=False, mf=True)
    message = parse_icmp(build_time_exceeded(TimeExceededCode.REASSEMBLY, offending))
    assert message.type == IcmpType.TIME_EXCEEDED and message.code == 1
    assert message.body == offending[:28]


def test_quote_keeps_options_and_cuts_at_eight_bytes():
    offending = build_ipv4(SRC, DST, PROTO_TCP, b"0123456789", options=b"\x01" * 8)
    assert quote_offending_datagram(offending) == offending[:28 + 8]
    short = build_ipv4(SRC, DST, PROTO_TCP, b"abc")
    assert quote_offending_datagram(short) == short


def test_parse_quoted_datagram():
    offending = build_ipv4(SRC, DST, PROTO_TCP, bytes(range(20)))
    message = parse_icmp(build_dest_unreachable(UnreachableCode.PORT, offending))
    quoted = parse_quoted_datagram(message.body)
    assert (quoted.src, quoted.dst, quoted.protocol) == (SRC, DST, PROTO_TCP)
    assert quoted.transport_head == bytes(range(8))


@pytest.mark.parametrize("body", [b"", b"\x45" * 19, b"\x65" + b"\0" * 27, b"\x4f" + b"\0" * 27,
                                  b"\x44" + b"\0" * 27])
def test_parse_quoted_datagram_rejects_garbage(body):
    with pytest.raises(IcmpParseError) as caught:
        parse_quoted_datagram(body)
    assert caught.value.reason == "bad_quote"


@pytest.mark.parametrize("length", range(8))
def test_truncated(length):
    with pytest.raises(IcmpParseError) as caught:
        parse_icmp(build_echo_request(1, 1)[:length])
    assert caught.value.reason == "truncated"


def test_bad_checksum():
    packet = bytearray(build_echo_request(1, 2, b"data"))
    packet[-1] ^= 0xFF
    with pytest.raises(IcmpParseError) as caught:
        parse_icmp(packet)
    assert caught.value.reason == "bad_checksum"


@given(st.binary(max_size=64))
def test_random_bytes_parse_or_raise_parse_error(data):
    try:
        message = parse_icmp(data)
    except IcmpParseError as error:
        assert error.reason in {"truncated", "bad_checksum"}
    else:
        assert isinstance(message, IcmpMessage) and len(message.body) == len(data) - 8


def test_generic_build_round_trip():
    message = parse_icmp(build_icmp(13, 0, 0xDEADBEEF, b"timestamps"))
    assert (message.type, message.code, message.rest_of_header, message.body) == \
        (13, 0, 0xDEADBEEF, b"timestamps")


@pytest.mark.parametrize("icmp_type,error", [
    (0, False), (8, False), (13, False), (14, False), (3, True), (4, True), (5, True),
    (11, True), (12, True), (19, True), (255, True),
])
def test_error_types(icmp_type, error):
    assert is_error_type(icmp_type) is error
