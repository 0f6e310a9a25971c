"""The UDP header (RFC 768), with its checksum over the IPv4 pseudo-header.

RFC 1122 section 4.1.3.4: a host always computes the checksum when it sends,
and verifies a non-zero one when it receives (zero means the sender computed
none).  A computed checksum of zero is sent as all ones (RFC 768).
"""
from __future__ import annotations

import struct

from proto.wire.checksum import internet_checksum, ones_complement_sum, pseudo_header_sum

PROTO_UDP = 17
HEADER_LENGTH = 8
MAX_PAYLOAD = 65535 - 20 - HEADER_LENGTH      # 65,507: what fits one IPv4 datagram
_HEADER = struct.Struct("!HHHH")


class UdpParseError(ValueError):
    """A datagram that cannot be parsed; `reason` is the drop counter's name."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def parse_udp(data: bytes | memoryview, src: bytes, dst: bytes,
              verify_checksum: bool = True) -> tuple[int, int, bytes | memoryview]:
    """(source port, destination port, payload) of one datagram.

    The payload is cut at the header's length (IP may carry padding after it).
    Raises `UdpParseError` "truncated" (under 8 bytes), "bad_length" (the
    length field below 8 or beyond the IP payload) or "bad_checksum".
    """
    if len(data) < HEADER_LENGTH:
        raise UdpParseError("truncated")
    src_port, dst_port, length, checksum = _HEADER.unpack_from(data)
    if length < HEADER_LENGTH or length > len(data):
        raise UdpParseError("bad_length")
    if checksum and verify_checksum:
        if ones_complement_sum(data[:length], pseudo_header_sum(src, dst, PROTO_UDP, length)) != 0xFFFF:
            raise UdpParseError("bad_checksum")
    return src_port, dst_port, data[HEADER_LENGTH:length]


def build_udp(src_port: int, dst_port: int, payload: bytes | memoryview, src: bytes, dst: bytes) -> bytes:
    """One datagram with its checksum (never zero on the wire: zero goes as 0xFFFF)."""
    length = HEADER_LENGTH + len(payload)
    if length > 65535:
        raise ValueError(f"a UDP datagram of {length} bytes exceeds 65535")
    header = _HEADER.pack(src_port, dst_port, length, 0)
    checksum = internet_checksum(payload, ones_complement_sum(header, pseudo_header_sum(src, dst, PROTO_UDP, length)))
    return b"".join((header[:6], (checksum or 0xFFFF).to_bytes(2, "big"), payload))


def udp_ports(head: bytes | memoryview) -> tuple[int, int]:
    """(source, destination) port of the first 4 bytes of a UDP header (an ICMP error's quote)."""
    return (head[0] << 8) | head[1], (head[2] << 8) | head[3]
