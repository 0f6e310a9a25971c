"""The pure IP layer: input checks, delivery, ICMP, reassembly, output, robustness."""
import random

import pytest
from hypothesis import given, settings, strategies as st

from proto.ip.fragment import Reassembler, fragment
from proto.ip.layer import COUNTER_NAMES, IpConfig, IpLayer, IpOutput
from proto.wire.checksum import ones_complement_sum
from proto.wire.icmp import (
    IcmpType, UnreachableCode, build_dest_unreachable, build_echo_reply, build_echo_request, build_icmp,
    parse_icmp,
)
from proto.wire.ipv4 import (
    PROTO_ICMP, PROTO_TCP, PROTO_UDP, Ipv4Flags, Ipv4Header, build_ipv4, parse_ipv4, str_to_addr,
)

US = str_to_addr("198.18.0.2")
PEER = str_to_addr("198.18.0.1")
SEGMENT = bytes(range(40))


PROTO_SCTP = 132          # a protocol the stack does not speak


def make_layer(**overrides) -> IpLayer:
    return IpLayer(IpConfig(address=US, **overrides))


def receive(layer: IpLayer, *packets: bytes, now: float = 0.0) -> IpOutput:
    out = IpOutput()
    for packet in packets:
        layer.packet_in(now, packet, out)
    return out


def nonzero(layer: IpLayer) -> dict[str, int]:
    return {name: value for name, value in layer.counters.items() if value}


def fix_checksum(packet: bytes | bytearray) -> bytes:
    packet = bytearray(packet)
    header_length = (packet[0] & 0x0F) * 4
    packet[10:12] = b"\0\0"
    packet[10:12] = (~ones_complement_sum(packet[:header_length]) & 0xFFFF).to_bytes(2, "big")
    return bytes(packet)


def tcp_from_peer(payload: bytes = SEGMENT, **kwargs) -> bytes:
    return build_ipv4(PEER, US, PROTO_TCP, payload, **kwargs)


def split_packet(packet: bytes, mtu: int) -> list[bytes]:
    header, payload = parse_ipv4(packet)
    return fragment(header, payload, mtu)


# ---- counters and config ------------------------------------------------------------

def test_counters_are_all_present_at_zero():
    layer = make_layer()
    expected = {
        "in_receives", "in_bytes", "in_delivers", "out_requests", "out_packets", "out_bytes",
        "echo_requests", "echo_replies", "reasm_reqds", "reasm_oks", "reasm_fails", "frag_oks",
        "frag_creates", "drop_truncated", "drop_bad_version", "drop_bad_header_length",
        "drop_bad_total_length", "drop_bad_checksum", "drop_not_for_us",
        "drop_reasm_overlap", "drop_reasm_timeout", "drop_reasm_memory", "drop_reasm_oversize",
        "drop_frag_needed_df", "drop_icmp_malformed", "drop_unknown_protocol", "not_ipv4",
        "icmp_ratelimited",
    }
    assert expected <= set(layer.counters)
    assert set(layer.counters) == set(COUNTER_NAMES)
    assert all(value == 0 for value in layer.counters.values())


@pytest.mark.parametrize("overrides", [
    {"address": b"\0\0\0"}, {"mtu": 67}, {"mtu": 65536}, {"ttl": 0}, {"ttl": 256},
    {"reassembly_timeout": 0}, {"reassembly_max_bytes": 0}, {"icmp_error_rate": -1},
])
def test_config_rejects_nonsense(overrides):
    with pytest.raises(ValueError):
        IpConfig(**({"address": US} | overrides))


# ---- delivery to TCP ------------------------------------------------------------------

def test_tcp_for_us_goes_to_tcp():
    layer = make_layer()
    out = receive(layer, tcp_from_peer())
    assert out.to_device == []
    [(src, dst, segment)] = out.to_tcp
    assert (src, dst, bytes(segment)) == (PEER, US, SEGMENT)
    assert type(src) is bytes and type(dst) is bytes
    assert nonzero(layer) == {"in_receives": 1, "in_bytes": 60, "in_delivers": 1}


def test_tcp_with_options_takes_the_full_path():
    layer = make_layer()
    out = receive(layer, tcp_from_peer(options=bytes([0x94, 4, 0, 0])))
    assert [(src, dst, bytes(segment)) for src, dst, segment in out.to_tcp] == [(PEER, US, SEGMENT)]


def test_link_padding_is_stripped():
    layer = make_layer()
    out = receive(layer, tcp_from_peer(b"tiny") + b"\0" * 20, bytearray(tcp_from_peer(b"ba")))
    assert [bytes(segment) for _, _, segment in out.to_tcp] == [b"tiny", b"ba"]


def test_read_only_views_are_not_copied_and_mutable_buffers_are():
    layer = make_layer()
    packet = tcp_from_peer()
    view = memoryview(packet)
    mutable = bytearray(packet)
    out = receive(layer, view, memoryview(mutable), mutable)
    assert [bytes(segment) for _, _, segment in out.to_tcp] == [SEGMENT] * 3
    assert out.to_tcp[0][2].obj is packet
    assert all(type(src) is bytes for src, _, _ in out.to_tcp)
    mutable[-1] ^= 0xFF                                         # TCP's copies do not change
    assert [bytes(segment) for _, _, segment in out.to_tcp[1:]] == [SEGMENT] * 2


def test_views_take_the_full_path_too():
    layer = make_layer()
    request = build_ipv4(PEER, US, PROTO_ICMP, build_echo_request(1, 1, b"v"), options=b"\x01" * 4)
    out = receive(layer, memoryview(request), memoryview(b"\x60" * 40))
    assert len(out.to_device) == 1 and layer.counters["not_ipv4"] == 1


def test_ttl_one_is_fine_for_local_delivery():
    layer = make_layer()
    assert len(receive(layer, tcp_from_peer(ttl=1)).to_tcp) == 1


def test_reserved_flag_is_ignored():
    packet = bytearray(tcp_from_peer())
    packet[6] |= 0x80
    assert len(receive(make_layer(), fix_checksum(packet)).to_tcp) == 1


def test_fragmented_tcp_is_reassembled_then_delivered():
    layer = make_layer()
    big = bytes(random.Random(2).randbytes(3000))
    pieces = split_packet(tcp_from_peer(big, df=False, ident=77), 1000)
    assert len(pieces) == 4
    out = receive(layer, *reversed(pieces))
    [(src, dst, segment)] = out.to_tcp
    assert (src, dst, bytes(segment)) == (PEER, US, big)
    assert layer.counters["reasm_reqds"] == 4 and layer.counters["reasm_oks"] == 1
    assert layer.counters["in_delivers"] == 1


# ---- drops, each with its reason -------------------------------------------------------

def test_ipv6_is_ignored_and_counted():
    layer = make_layer()
    router_solicitation = bytes.fromhex("6000000000103aff") + b"\xfe\x80" + b"\0" * 30 + b"\x85" + b"\0" * 15
    out = receive(layer, router_solicitation, b"\x60")
    assert out.to_device == [] and out.to_tcp == []
    assert layer.counters["not_ipv4"] == 2
    assert not any(value for name, value in layer.counters.items() if name.startswith("drop_"))


def mutate(packet: bytes, index: int, value: int, checksum: bool = True) -> bytes:
    packet = bytearray(packet)
    packet[index] = value
    return fix_checksum(packet) if checksum else bytes(packet)


GOOD = build_ipv4(PEER, US, PROTO_TCP, SEGMENT)


@pytest.mark.parametrize("packet,reason", [
    (b"", "drop_truncated"),
    (GOOD[:19], "drop_truncated"),
    (GOOD[:-1], "drop_truncated"),                              # total length beyond the data
    (mutate(GOOD, 0, 0x55), "drop_bad_version"),
    (mutate(GOOD, 0, 0x05), "drop_bad_version"),
    (mutate(GOOD, 0, 0x44, checksum=False), "drop_bad_header_length"),
    (mutate(GOOD, 3, 19), "drop_bad_total_length"),
    (mutate(GOOD, 8, 63, checksum=False), "drop_bad_checksum"),
    (build_ipv4(PEER, str_to_addr("198.18.0.3"), PROTO_TCP, SEGMENT), "drop_not_for_us"),
    (build_ipv4(PEER, str_to_addr("255.255.255.255"), PROTO_TCP, SEGMENT), "drop_not_for_us"),
    (build_ipv4(PEER, str_to_addr("198.18.255.255"), PROTO_TCP, SEGMENT), "drop_not_for_us"),
    (build_ipv4(PEER, str_to_addr("224.0.0.1"), PROTO_ICMP, build_echo_request(1, 1)), "drop_not_for_us"),
    (build_ipv4(str_to_addr("255.255.255.255"), US, PROTO_UDP, b"x" * 8), "drop_bad_source"),
    (build_ipv4(str_to_addr("224.0.0.5"), US, PROTO_TCP, SEGMENT), "drop_bad_source"),
    (build_ipv4(str_to_addr("0.0.0.0"), US, PROTO_TCP, SEGMENT), "drop_bad_source"),
    (build_ipv4(str_to_addr("127.0.0.1"), US, PROTO_TCP, SEGMENT), "drop_bad_source"),
    (build_ipv4(US, US, PROTO_TCP, SEGMENT), "drop_bad_source"),     # a "land" attack
])
def test_bad_packets_are_counted_and_dropped(packet, reason):
    layer = make_layer()
    out = receive(layer, packet)
    assert out.to_device == [] and out.to_tcp == []
    drops = {name: value for name, value in nonzero(layer).items() if name.startswith("drop_")}
    assert drops == {reason: 1}
    assert layer.counters["in_receives"] == 1


# ---- ICMP echo ---------------------------------------------------------------------------

def test_echo_request_is_answered():
    layer = make_layer(ttl=50)
    request = build_ipv4(PEER, US, PROTO_ICMP, build_echo_request(0x1234, 9, b"abcdefgh" * 7), ttl=3)
    out = receive(layer, request)
    [reply] = out.to_device
    header, payload = parse_ipv4(reply)                         # header checksum verifies
    assert (header.src, header.dst, header.protocol, header.ttl) == (US, PEER, PROTO_ICMP, 50)
    assert bytes(payload) == build_echo_reply(0x1234, 9, b"abcdefgh" * 7)
    message = parse_icmp(payload)                               # ICMP checksum verifies
    assert message.type == IcmpType.ECHO_REPLY and message.code == 0
    assert (message.identifier, message.sequence, message.body) == (0x1234, 9, b"abcdefgh" * 7)
    assert layer.counters["echo_requests"] == 1 and layer.counters["echo_replies"] == 1
    assert layer.counters["out_packets"] == 1 and layer.counters["out_bytes"] == len(reply)


def test_echo_replies_are_not_rate_limited():
    layer = make_layer(icmp_error_rate=0.0)
    request = build_ipv4(PEER, US, PROTO_ICMP, build_echo_request(1, 1, b"x"))
    assert len(receive(layer, *[request] * 200).to_device) == 200


def test_large_fragmented_echo_gets_a_fragmented_reply():
    layer = make_layer(mtu=1500)
    data = bytes(random.Random(3).randbytes(4000))
    request = build_ipv4(PEER, US, PROTO_ICMP, build_echo_request(5, 6, data), df=False, ident=1)
    out = receive(layer, *split_packet(request, 1500))
    assert len(out.to_device) == 3 and all(len(packet) <= 1500 for packet in out.to_device)
    reassembler = Reassembler()                                 # reassemble as the peer would
    for packet in out.to_device:
        header, payload = parse_ipv4(packet)
        assert header.dst == PEER
        result = reassembler.add(0.0, header, payload)
    message = parse_icmp(result[1])
    assert (message.type, message.identifier, message.sequence, message.body) == \
        (IcmpType.ECHO_REPLY, 5, 6, data)
    assert layer.counters["frag_oks"] == 1 and layer.counters["frag_creates"] == 3


def test_bad_icmp_is_counted():
    layer = make_layer()
    corrupt = bytearray(build_echo_request(1, 1, b"data"))
    corrupt[-1] ^= 1
    out = receive(layer, build_ipv4(PEER, US, PROTO_ICMP, bytes(corrupt)),
                  build_ipv4(PEER, US, PROTO_ICMP, b"\x08\x00\xf7"))
    assert out.to_device == [] and layer.counters["drop_icmp_malformed"] == 2


@pytest.mark.parametrize("message", [
    build_echo_reply(1, 1, b"late"),
    build_dest_unreachable(UnreachableCode.PORT, build_ipv4(US, PEER, PROTO_TCP, SEGMENT)),
    build_icmp(IcmpType.TIMESTAMP_REQUEST, 0, 0, b"\0" * 12),
    build_icmp(42, 7, 0, b"unknown"),
])
def test_other_icmp_is_ignored_gracefully(message):
    layer = make_layer()
    out = receive(layer, build_ipv4(PEER, US, PROTO_ICMP, message))
    assert out.to_device == [] and out.to_tcp == []
    assert layer.counters["icmp_ignored"] == 1 and layer.counters["drop_icmp_malformed"] == 0


# ---- ICMP errors ---------------------------------------------------------------------------

def test_sctp_gets_protocol_unreachable():
    layer = make_layer()
    udp = build_ipv4(PEER, US, PROTO_SCTP, b"\x04\xd2\x00\x35\x00\x10\x00\x00" + b"dns?" * 4)
    out = receive(layer, udp)
    [packet] = out.to_device
    header, payload = parse_ipv4(packet)
    assert (header.src, header.dst, header.protocol) == (US, PEER, PROTO_ICMP)
    message = parse_icmp(payload)
    assert (message.type, message.code) == (IcmpType.DEST_UNREACHABLE, UnreachableCode.PROTOCOL)
    assert message.body == udp[:28]                            # header + 8 bytes
    assert layer.counters["drop_unknown_protocol"] == 1
    assert layer.counters["icmp_errors_sent"] == 1 and layer.counters["out_requests"] == 1


def test_any_unknown_protocol_gets_protocol_unreachable():
    layer = make_layer()
    out = receive(layer, build_ipv4(PEER, US, 253, b"experiment"))
    assert parse_icmp(parse_ipv4(out.to_device[0])[1]).code == UnreachableCode.PROTOCOL


def test_protocol_unreachable_for_a_reassembled_datagram_quotes_its_first_bytes():
    layer = make_layer()
    udp = build_ipv4(PEER, US, PROTO_SCTP, bytes(range(256)) * 8, df=False, ident=5)
    out = receive(layer, *split_packet(udp, 576))
    [packet] = out.to_device
    quote = parse_icmp(parse_ipv4(packet)[1]).body
    quoted_header, quoted_payload = parse_ipv4(quote[:20] + bytes(range(256)) * 8)
    assert quoted_header.total_length == len(udp) and not quoted_header.is_fragment
    assert quote[20:] == bytes(range(8))


def test_protocol_unreachable_is_rate_limited():
    layer = make_layer(icmp_error_rate=100.0)                   # burst of 50, then 100 a second
    udp = build_ipv4(PEER, US, PROTO_SCTP, b"x" * 8)
    assert len(receive(layer, *[udp] * 60, now=10.0).to_device) == 50
    assert layer.counters["icmp_ratelimited"] == 10
    assert layer.counters["drop_unknown_protocol"] == 60
    assert len(receive(layer, udp, now=10.005).to_device) == 0  # half a token
    assert len(receive(layer, udp, udp, now=10.011).to_device) == 1
    assert len(receive(layer, *[udp] * 100, now=10.211).to_device) == 20
    assert len(receive(layer, *[udp] * 100, now=100.0).to_device) == 50   # refilled, capped at 50
    assert layer.counters["icmp_ratelimited"] == 10 + 1 + 1 + 80 + 50


def test_a_clock_going_backwards_gives_no_tokens():
    layer = make_layer(icmp_error_rate=100.0)
    udp = build_ipv4(PEER, US, PROTO_SCTP, b"x" * 8)
    receive(layer, *[udp] * 50, now=10.0)
    assert len(receive(layer, udp, now=5.0).to_device) == 0
    assert len(receive(layer, udp, now=10.02).to_device) == 1


def test_no_error_to_a_broadcast_source():
    layer = make_layer()
    out = receive(layer, build_ipv4(str_to_addr("255.255.255.255"), US, PROTO_UDP, b"x" * 8))
    assert out.to_device == [] and layer.counters["icmp_errors_sent"] == 0


# ---- reassembly through the layer: timeouts, limits -------------------------------------------

def test_reassembly_timeout_sends_time_exceeded_quoting_the_first_fragment():
    layer = make_layer(reassembly_timeout=2.0)
    request = build_ipv4(PEER, US, PROTO_ICMP, build_echo_request(1, 1, b"p" * 3000), df=False, ident=9)
    first, second, _third = split_packet(request, 1500)
    out = receive(layer, first, second, now=1.0)
    assert out.to_device == [] and layer.next_deadline() == 3.0
    out = IpOutput()
    layer.expire(2.999, out)
    assert out.to_device == []
    layer.expire(3.0, out)
    [packet] = out.to_device
    header, payload = parse_ipv4(packet)
    assert header.dst == PEER
    message = parse_icmp(payload)
    assert (message.type, message.code) == (IcmpType.TIME_EXCEEDED, 1)
    assert message.body == first[:28]
    assert layer.counters["drop_reasm_timeout"] == 1 and layer.counters["reasm_fails"] == 1
    assert layer.next_deadline() is None


def test_timeout_without_first_fragment_sends_nothing():
    layer = make_layer(reassembly_timeout=2.0)
    pieces = split_packet(tcp_from_peer(b"q" * 3000, df=False), 1500)
    receive(layer, pieces[1], pieces[2], now=0.0)
    out = IpOutput()
    layer.expire(10.0, out)
    assert out.to_device == [] and layer.counters["drop_reasm_timeout"] == 1


def test_timeout_of_an_icmp_error_sends_nothing():
    layer = make_layer(reassembly_timeout=2.0)
    # A (silly) fragmented ICMP error: no ICMP error about it (RFC 1122 section 3.2.2).
    error = build_dest_unreachable(UnreachableCode.PORT, build_ipv4(US, PEER, PROTO_UDP, b"z" * 3000))
    error = build_icmp(IcmpType.DEST_UNREACHABLE, 3, 0, parse_icmp(error).body + b"z" * 2000)
    pieces = split_packet(build_ipv4(PEER, US, PROTO_ICMP, error, df=False), 1000)
    receive(layer, pieces[0], now=0.0)
    out = IpOutput()
    layer.expire(10.0, out)
    assert out.to_device == [] and layer.counters["drop_reasm_timeout"] == 1


def test_stale_queues_expire_when_fragments_arrive():
    layer = make_layer(reassembly_timeout=2.0)
    old = split_packet(tcp_from_peer(b"o" * 3000, df=False, ident=1), 1500)
    new = split_packet(tcp_from_peer(b"n" * 3000, df=False, ident=2), 1500)
    receive(layer, old[0], now=0.0)
    out = receive(layer, new[1], now=5.0)
    assert layer.counters["drop_reasm_timeout"] == 1
    assert [parse_icmp(parse_ipv4(packet)[1]).type for packet in out.to_device] == [IcmpType.TIME_EXCEEDED]
    assert layer.next_deadline() == 7.0


def test_overlapping_fragments_discard_the_datagram():
    layer = make_layer()
    packet = tcp_from_peer(bytes(100), df=False, ident=3)
    header, payload = parse_ipv4(packet)

    def piece(start, end, more):
        return build_ipv4(PEER, US, PROTO_TCP, bytes(payload[start:end]), ident=3, df=False,
                          mf=more, frag_offset=start)
    out = receive(layer, piece(0, 48, True), piece(40, 100, False))
    assert out.to_tcp == [] and layer.counters["drop_reasm_overlap"] == 1


def test_memory_cap_from_config():
    layer = make_layer(reassembly_max_bytes=5000)
    pieces = [split_packet(tcp_from_peer(b"m" * 3000, df=False, ident=ident), 1500)[0]
              for ident in range(5)]
    receive(layer, *pieces)
    assert layer.counters["drop_reasm_memory"] == 2
    assert len(layer.reassembler.queues) == 3


def test_oversize_through_the_layer():
    layer = make_layer()
    last = build_ipv4(PEER, US, PROTO_TCP, b"x" * 16, df=False, frag_offset=65528)
    receive(layer, last)
    assert layer.counters["drop_reasm_oversize"] == 1 and layer.next_deadline() is None


# ---- output -------------------------------------------------------------------------------------

def test_send_builds_one_packet():
    layer = make_layer(ttl=33)
    out = IpOutput()
    layer.send(0.0, US, PEER, PROTO_TCP, SEGMENT, out)
    layer.send(0.0, US, PEER, PROTO_TCP, SEGMENT, out)
    headers = [parse_ipv4(packet)[0] for packet in out.to_device]
    assert [header.ident for header in headers] == [0, 1]
    assert all(header.ttl == 33 and header.dont_fragment and header.src == US and header.dst == PEER
               and header.protocol == PROTO_TCP for header in headers)
    assert [bytes(parse_ipv4(packet)[1]) for packet in out.to_device] == [SEGMENT, SEGMENT]
    assert nonzero(layer) == {"out_requests": 2, "out_packets": 2, "out_bytes": 120}


def test_ident_wraps():
    layer = make_layer()
    layer.next_ident = 0xFFFF
    out = IpOutput()
    layer.send(0.0, US, PEER, PROTO_TCP, b"", out)
    layer.send(0.0, US, PEER, PROTO_TCP, b"", out)
    assert [parse_ipv4(packet)[0].ident for packet in out.to_device] == [0xFFFF, 0]


def test_send_exactly_mtu_is_not_fragmented():
    layer = make_layer(mtu=576)
    out = IpOutput()
    layer.send(0.0, US, PEER, PROTO_TCP, bytes(556), out)
    assert [len(packet) for packet in out.to_device] == [576]


def test_send_too_big_with_df_is_dropped():
    layer = make_layer(mtu=576)
    out = IpOutput()
    layer.send(0.0, US, PEER, PROTO_TCP, bytes(557), out)
    assert out.to_device == [] and layer.counters["drop_frag_needed_df"] == 1


def test_send_too_big_without_df_is_fragmented():
    layer = make_layer(mtu=576)
    out = IpOutput()
    data = bytes(random.Random(4).randbytes(2000))
    layer.send(0.0, US, PEER, PROTO_TCP, data, out, df=False)
    parsed = [parse_ipv4(packet) for packet in out.to_device]
    assert [header.frag_offset for header, _ in parsed] == [0, 552, 1104, 1656]
    assert all(len(packet) <= 576 for packet in out.to_device)
    assert len({header.ident for header, _ in parsed}) == 1
    assert b"".join(bytes(payload) for _, payload in parsed) == data
    assert layer.counters["frag_oks"] == 1 and layer.counters["frag_creates"] == 4
    assert layer.counters["out_packets"] == 4
    assert layer.counters["out_bytes"] == sum(len(packet) for packet in out.to_device)


def test_send_more_than_a_datagram_holds_is_a_bug():
    with pytest.raises(ValueError):
        make_layer().send(0.0, US, PEER, PROTO_TCP, bytes(65516), IpOutput(), df=False)


def test_send_then_receive_round_trip_between_two_layers():
    sender = IpLayer(IpConfig(address=PEER, mtu=1000))
    receiver = make_layer()
    data = bytes(random.Random(5).randbytes(5000))
    out = IpOutput()
    sender.send(0.0, PEER, US, PROTO_TCP, data, out, df=False)
    delivered = receive(receiver, *reversed(out.to_device))
    assert [(src, bytes(segment)) for src, _, segment in delivered.to_tcp] == [(PEER, data)]


def test_datagrams_to_ourselves_loop_back_whole_and_vouched_for():
    """Our address and 127.0.0.0/8 go back in at once, as through Linux's lo: not to the device,
    not cut to the MTU, and marked as never having crossed a wire (no checksum to check)."""
    layer = make_layer(mtu=576)
    loopback = str_to_addr("127.0.0.1")
    out = IpOutput()
    layer.send(0.0, US, PEER, PROTO_TCP, SEGMENT, out)
    layer.send(0.0, US, US, PROTO_TCP, bytes(4000), out)
    layer.send(0.0, loopback, loopback, PROTO_TCP, SEGMENT, out)
    assert len(out.to_device) == 1 and parse_ipv4(out.to_device[0])[0].dst == PEER
    assert [(src, dst, len(segment)) for src, dst, segment in out.to_tcp] == [(US, US, 4000),
                                                                              (loopback, loopback, 40)]
    assert out.looped == [0, 1]
    assert layer.counters["loopback_packets"] == 2 and layer.counters["out_packets"] == 1


def test_only_tcp_and_udp_loop_back():
    layer = make_layer()
    out = IpOutput()
    layer.send(0.0, US, US, PROTO_SCTP, b"12345678", out)
    assert out.to_tcp == [] and out.to_device == [] and layer.counters["drop_loopback_protocol"] == 1
    layer.send(0.0, US, US, PROTO_UDP, b"12345678", out)
    assert out.to_udp == [(US, US, b"", b"12345678")] and out.udp_looped == [0]


# ---- UDP: datagrams to udpd, ICMP errors both ways ---------------------------------------------

def test_udp_goes_to_udp_with_its_header_for_a_quote():
    layer = make_layer()
    udp = build_ipv4(PEER, US, PROTO_UDP, b"\x04\xd2\x00\x35\x00\x0c\x00\x00dns?")
    out = receive(layer, udp)
    [(src, dst, header, datagram)] = out.to_udp
    assert (src, dst, header, bytes(datagram)) == (PEER, US, udp[:20], udp[20:])
    assert out.to_device == [] and layer.counters["drop_unknown_protocol"] == 0


def test_a_fragmented_udp_datagram_is_reassembled_for_udp():
    layer = make_layer()
    udp = build_ipv4(PEER, US, PROTO_UDP, bytes(range(256)) * 40, df=False, ident=7)
    out = receive(layer, *split_packet(udp, 1500))
    [(_, _, header, datagram)] = out.to_udp
    assert bytes(datagram) == udp[20:] and header[9] == PROTO_UDP and header[12:20] == PEER + US


def test_large_udp_leaves_in_fragments():
    layer = make_layer()
    out = IpOutput()
    layer.send(0.0, US, PEER, PROTO_UDP, bytes(65515), out, df=False)
    assert len(out.to_device) == 45 and all(len(p) <= 1500 for p in out.to_device)


def test_udp_to_a_broadcast_address_is_taken_only_when_configured():
    broadcast = str_to_addr("198.18.0.255")
    udp = build_ipv4(PEER, broadcast, PROTO_UDP, b"x" * 8)
    assert receive(make_layer(), udp).to_udp == []
    assert len(receive(make_layer(broadcasts=(broadcast,)), udp).to_udp) == 1


def test_port_unreachable_quotes_the_datagram_and_is_rate_limited():
    layer = make_layer(icmp_error_rate=100.0)
    udp = build_ipv4(PEER, US, PROTO_UDP, b"\x04\xd2\x00\x35\x00\x10\x00\x00" + b"dns?" * 2)
    out = IpOutput()
    for _ in range(60):
        layer.port_unreachable(10.0, udp[:28], out)
    assert len(out.to_device) == 50 and layer.counters["icmp_ratelimited"] == 10
    message = parse_icmp(parse_ipv4(out.to_device[0])[1])
    assert (message.type, message.code, message.body) == (IcmpType.DEST_UNREACHABLE, UnreachableCode.PORT,
                                                          udp[:28])


def test_no_port_unreachable_about_a_later_fragment_or_a_bad_quote():
    layer = make_layer()
    out = IpOutput()
    later = build_ipv4(PEER, US, PROTO_UDP, b"x" * 8, df=False, frag_offset=1480)
    layer.port_unreachable(0.0, later[:28], out)
    layer.port_unreachable(0.0, b"junk", out)
    assert out.to_device == [] and layer.counters["drop_bad_unreachable_quote"] == 1


def test_icmp_errors_about_udp_go_to_udp():
    layer = make_layer()
    sent = build_ipv4(US, PEER, PROTO_UDP, b"\x80\x00\x00\x35\x00\x10\x00\x00" + b"q" * 8)
    error = build_ipv4(PEER, US, PROTO_ICMP, build_dest_unreachable(UnreachableCode.PORT, sent))
    out = receive(layer, error)
    assert out.udp_errors == [(IcmpType.DEST_UNREACHABLE, UnreachableCode.PORT, sent[:28])]
    assert layer.counters["udp_icmp_errors"] == 1 and layer.counters["icmp_ignored"] == 0


# ---- nothing a peer sends raises ------------------------------------------------------------------

VALID_PACKETS = [
    GOOD,
    build_ipv4(PEER, US, PROTO_ICMP, build_echo_request(1, 2, b"hello")),
    build_ipv4(PEER, US, PROTO_UDP, b"12345678abc"),
    build_ipv4(PEER, US, PROTO_TCP, SEGMENT, options=bytes([0x94, 4, 0, 0])),
    *split_packet(build_ipv4(PEER, US, PROTO_ICMP, build_echo_request(1, 2, bytes(300)),
                             df=False, ident=4), 100),
]


@settings(max_examples=500)
@given(st.lists(st.binary(max_size=120), max_size=8))
def test_random_bytes_never_raise(packets):
    layer = make_layer()
    out = IpOutput()
    for now, packet in enumerate(packets):
        layer.packet_in(float(now), packet, out)
    layer.expire(1e9, out)


@settings(max_examples=1000)
@given(st.lists(st.tuples(st.sampled_from(VALID_PACKETS),
                          st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=4),
                          st.integers(0, 400), st.booleans()),
                min_size=1, max_size=10),
       st.floats(0, 100))
def test_mutated_valid_packets_never_raise(mutations, step):
    layer = make_layer(reassembly_timeout=5.0, reassembly_max_bytes=2000, icmp_error_rate=1.0)
    out = IpOutput()
    now = 0.0
    for packet, changes, cut, recompute in mutations:
        packet = bytearray(packet)
        for index, value in changes:
            if index < len(packet):
                packet[index] = value
        packet = packet[:cut] if cut < len(packet) else packet
        if recompute and len(packet) >= 20 and 20 <= (packet[0] & 0x0F) * 4 <= len(packet):
            packet = fix_checksum(packet)
        layer.packet_in(now, bytes(packet), out)
        now += step
    layer.expire(now + 100.0, out)
    for packet in out.to_device:
        header, _ = parse_ipv4(packet)                          # everything we send is valid
        assert header.src == US and header.ttl == 64
    assert all(value >= 0 for value in layer.counters.values())
    assert layer.reassembler.memory >= 0


@given(st.binary(max_size=200), st.integers(0, 255))
def test_any_protocol_and_payload_never_raises(payload, protocol):
    layer = make_layer()
    out = receive(layer, build_ipv4(PEER, US, protocol, payload))
    assert len(out.to_tcp) + len(out.to_device) <= 1


def test_fast_path_agrees_with_full_parse():
    # The same segment, once with a 20-byte header (fast) and once with a NOP option (full parse).
    fast = receive(make_layer(), tcp_from_peer()).to_tcp
    slow = receive(make_layer(), tcp_from_peer(options=b"\x01" * 4)).to_tcp
    assert [(s, d, bytes(p)) for s, d, p in fast] == [(s, d, bytes(p)) for s, d, p in slow]


def test_flags_helpers_on_parsed_fragments():
    header, _ = parse_ipv4(split_packet(tcp_from_peer(bytes(3000), df=False), 1500)[0])
    assert header.flags == Ipv4Flags.MF and isinstance(header, Ipv4Header)


ICMP_PAYLOADS = st.one_of(
    st.builds(build_echo_request, st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=64)),
    st.builds(lambda kind, code, body: build_icmp(kind, code, 0, body),
              st.integers(0, 255), st.integers(0, 255), st.binary(max_size=40)),
    st.binary(max_size=40),
)
WELL_FORMED_PACKETS = st.builds(
    lambda src, dst, protocol_and_payload, ttl, ident, mf, offset_units, options: build_ipv4(
        src, dst, protocol_and_payload[0], protocol_and_payload[1], ttl=ttl, ident=ident, df=False,
        mf=mf, frag_offset=offset_units * 8, options=options),
    src=st.sampled_from([PEER, str_to_addr("10.1.2.3"), str_to_addr("255.255.255.255"), US]),
    dst=st.sampled_from([US, US, US, PEER]),
    protocol_and_payload=st.one_of(
        st.tuples(st.just(PROTO_ICMP), ICMP_PAYLOADS),
        st.tuples(st.sampled_from([PROTO_TCP, PROTO_UDP, 99]), st.binary(max_size=64))),
    ttl=st.sampled_from([0, 1, 64]),
    ident=st.integers(0, 2),
    mf=st.booleans(),
    offset_units=st.one_of(st.integers(0, 16), st.just(0x1FFF), st.integers(0, 0x1FFF)),
    options=st.sampled_from([b"", b"\x01" * 4, b"\x01" * 40]),
)


@settings(max_examples=500)
@given(st.lists(st.tuples(WELL_FORMED_PACKETS, st.floats(0, 3)), max_size=20),
       st.sampled_from([300, 4000, 4 * 1024 * 1024]))
def test_well_formed_but_hostile_packets_never_raise(arrivals, max_bytes):
    """Valid checksums, so every check past the header is reached: fragments that overlap,
    repeat, contradict, overflow; ICMP of every type; every protocol; bad sources."""
    layer = make_layer(reassembly_timeout=5.0, reassembly_max_bytes=max_bytes, mtu=100,
                       icmp_error_rate=2.0)
    out = IpOutput()
    now = 0.0
    for packet, delay in arrivals:
        now += delay
        layer.packet_in(now, packet, out)
        queued = layer.reassembler.queues.values()
        assert layer.reassembler.memory == sum(queue.memory for queue in queued) <= max_bytes
    layer.expire(now + 100.0, out)
    assert layer.reassembler.memory == 0 and layer.next_deadline() is None
    for packet in out.to_device:
        assert len(packet) <= 100
        header, _ = parse_ipv4(packet)
        assert header.src == US and header.dst != US


# ---- TTL: RFC 1122 section 3.2.1.7 ----------------------------------------------------------

@pytest.mark.parametrize("ttl", [0, 1])
def test_a_datagram_for_us_is_taken_whatever_its_ttl(ttl):
    layer = make_layer()
    out = receive(layer, build_ipv4(PEER, US, PROTO_TCP, SEGMENT, ttl=ttl))             # the fast path
    assert [(src, dst, bytes(seg)) for src, dst, seg in out.to_tcp] == [(PEER, US, SEGMENT)]
    option = bytes((1, 1, 1, 0))                                                       # NOPs, EOL: the slow path
    out = receive(layer, build_ipv4(PEER, US, PROTO_TCP, SEGMENT, ttl=ttl, options=option))
    assert [bytes(seg) for _, _, seg in out.to_tcp] == [SEGMENT]
    first = build_ipv4(PEER, US, PROTO_TCP, SEGMENT[:16], ttl=ttl, ident=9, df=False, mf=True)
    last = build_ipv4(PEER, US, PROTO_TCP, SEGMENT[16:], ttl=ttl, ident=9, df=False, frag_offset=16)
    out = receive(layer, first, last)                                                  # reassembled
    assert [bytes(seg) for _, _, seg in out.to_tcp] == [SEGMENT]
    assert not {name for name, value in nonzero(layer).items() if name.startswith("drop_")}


def test_an_echo_request_with_ttl_0_is_answered_with_our_ttl():
    layer = make_layer()
    out = receive(layer, build_ipv4(PEER, US, PROTO_ICMP, build_echo_request(7, 1, b"hi"), ttl=0))
    (reply,) = out.to_device
    header, _ = parse_ipv4(reply)
    assert header.ttl == 64 and header.dst == PEER


def test_the_stack_never_sends_ttl_0():
    with pytest.raises(ValueError):
        IpConfig(address=US, ttl=0)
