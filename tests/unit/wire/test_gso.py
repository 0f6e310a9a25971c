"""Software segmentation: a super-segment becomes valid wire packets."""
from proto.wire.gso import segment_tcp
from proto.wire.ipv4 import PROTO_TCP, build_ipv4, parse_ipv4
from proto.wire.tcp import TcpFlags, TcpSegment, build_tcp, parse_tcp

A, B = b"\xc6\x12\x00\x02", b"\xc6\x12\x00\x01"
ACK, PSH, FIN = TcpFlags.ACK, TcpFlags.PSH, TcpFlags.FIN


def _packet(payload: bytes, flags, seq: int = 0xFFFFF000, offload: bool = True) -> bytes:
    tcp = build_tcp(TcpSegment(4000, 80, seq, 77, flags, 500, payload=payload), A, B, offload_checksum=offload)
    return build_ipv4(A, B, PROTO_TCP, tcp, ident=0xFFFE)


def test_a_super_segment_becomes_mss_sized_packets_with_their_own_checksums():
    payload = bytes(range(256)) * 40                   # 10240 bytes: 7 pieces of 1460, one of 20
    pieces = segment_tcp(_packet(payload, ACK | PSH | FIN), 1500)
    assert [len(p) for p in pieces] == [1500] * 7 + [60]
    got, seq = b"", 0xFFFFF000
    for i, piece in enumerate(pieces):
        header, body = parse_ipv4(piece)                   # IP checksum checked
        assert header.ident == (0xFFFE + i) & 0xFFFF
        seg = parse_tcp(body, A, B)                        # TCP checksum checked
        assert seg.seq == seq and seg.ack == 77 and seg.window == 500
        assert seg.flags == (ACK | PSH | FIN if i == 7 else ACK)
        seq = (seq + len(seg.payload)) & 0xFFFFFFFF       # wraps past 2**32
        got += seg.payload
    assert got == payload


def test_what_fits_or_is_not_tcp_goes_as_it_is():
    small = _packet(b"x" * 1460, ACK, offload=False)
    assert segment_tcp(small, 1500) == [small]
    icmp = build_ipv4(A, B, 1, b"\x08\x00" + b"\0" * 3000)
    assert segment_tcp(icmp, 1500) == [icmp]


def test_a_malformed_super_segment_passes_as_it_is():
    """A header length under 20 (IP or TCP) in a packet beyond the MTU: no piece is made from it."""
    for ihl, offset in ((0x40, 0x50), (0x45, 0x00), (0x45, 0x40)):
        packet = bytearray(3000)
        packet[0], packet[9], packet[2:4] = ihl, 6, (3000).to_bytes(2, "big")
        packet[20 + 12] = offset
        assert segment_tcp(bytes(packet), 1500) == [bytes(packet)]
