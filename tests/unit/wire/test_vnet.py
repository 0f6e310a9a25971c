from __future__ import annotations

from proto.wire import vnet
from proto.wire.checksum import pseudo_header_sum
from proto.wire.ipv4 import build_ipv4, parse_ipv4
from proto.wire.tcp import TcpFlags, TcpSegment, build_tcp, parse_tcp

SRC, DST = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])


def _tcp_packet(payload: bytes) -> bytes:
    segment = build_tcp(TcpSegment(40000, 80, 1000, 2000, TcpFlags.ACK, 512, payload=payload), SRC, DST)
    return build_ipv4(SRC, DST, 6, segment)


def test_plain_frame_passes_through():
    packet = _tcp_packet(b"hello")
    assert vnet.from_device(vnet.PLAIN + packet) == (packet, None)


def test_partial_checksum_is_completed():
    packet = bytearray(_tcp_packet(b"x" * 3001))
    good = bytes(packet)
    # what the kernel hands over with CHECKSUM_PARTIAL: the pseudo-header sum in the field
    tcp_len = len(packet) - 20
    partial = pseudo_header_sum(SRC, DST, 6, tcp_len)
    partial = (partial & 0xFFFF) + (partial >> 16)
    packet[36:38] = partial.to_bytes(2, "big")
    frame = vnet.HEADER.pack(vnet.NEEDS_CSUM, vnet.GSO_TCPV4, 40, 1460, 20, 16) + bytes(packet)
    partial, csum = vnet.from_device(frame)
    assert csum == (20, 16) and partial == bytes(packet)      # vouched for, left as the kernel gave it
    completed = vnet.complete_checksum(partial, *csum)
    assert completed == good
    header, segment = parse_ipv4(completed)
    parse_tcp(bytes(segment), SRC, DST)          # verifies the checksum


def test_large_tcp_packet_becomes_a_super_segment():
    packet = _tcp_packet(b"y" * 14600)
    header, out = vnet.to_device(packet, 1500)
    assert out is packet
    flags, gso_type, hdr_len, gso_size, _, _ = vnet.HEADER.unpack(header)
    assert (flags, gso_type, hdr_len, gso_size) == (vnet.NEEDS_CSUM, vnet.GSO_TCPV4, 40, 1460)


def test_small_tcp_packet_leaves_its_checksum_to_the_kernel():
    packet = _tcp_packet(b"z" * 100)
    header, out = vnet.to_device(packet, 1500)
    assert out is packet
    assert vnet.HEADER.unpack(header) == (vnet.NEEDS_CSUM, vnet.GSO_NONE, 0, 0, 20, 16)


def test_offloaded_checksum_is_the_pseudo_header_sum_and_completes_right():
    seg = TcpSegment(40000, 80, 1000, 2000, TcpFlags.ACK, 512, payload=b"q" * 999)
    partial = build_ipv4(SRC, DST, 6, build_tcp(seg, SRC, DST, offload_checksum=True))
    assert vnet.complete_checksum(partial, 20, 16) == build_ipv4(SRC, DST, 6, build_tcp(seg, SRC, DST))


def test_icmp_is_plain():
    icmp = build_ipv4(SRC, DST, 1, b"\x08" + b"\0" * 3000, df=False)
    assert vnet.to_device(icmp, 1500)[0] == vnet.PLAIN


def test_a_tcp_packet_left_to_the_device_is_completed_for_a_capture():
    seg = TcpSegment(4000, 80, 1, 2, TcpFlags.ACK, 100, payload=b"data" * 100)
    partial = build_ipv4(SRC, DST, 6, build_tcp(seg, SRC, DST, offload_checksum=True))
    whole = build_ipv4(SRC, DST, 6, build_tcp(seg, SRC, DST))
    assert partial != whole and vnet.complete_tcp_checksum(partial) == whole
    udp_like = bytes([0x45]) + bytes(8) + bytes([17]) + bytes(30)
    assert vnet.complete_tcp_checksum(udp_like) == udp_like


def test_malformed_packets_go_plain():
    """What a hostile dev_tx may hold: too short, a header length under 20 or beyond the packet."""
    for packet in (b"", b"\x45", bytes(39), b"\x41" + bytes(8) + b"\x06" + bytes(3000),
                   b"\x4f" + bytes(8) + b"\x06" + bytes(40),
                   b"\x45" + bytes(8) + b"\x06" + bytes(22) + b"\x10" + bytes(3000)):
        header, out = vnet.to_device(packet, 1500)
        assert out == packet and header == vnet.PLAIN
