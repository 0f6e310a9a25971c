"""The IPv4 header (RFC 791 section 3.1).

Two levels: `Ipv4Header` is the parsed, validated form; `parse_ipv4` and
`build_ipv4` convert to and from bytes, header checksum included.  The checks
`parse_ipv4` makes are those of Linux's `ip_rcv_core` (and RFC 1122 section
3.2.1.1-3.2.1.2), and each failure carries the name of its drop counter.

Addresses are 4-byte `bytes` everywhere in the stack; `addr_to_str` and
`str_to_addr` convert to and from dotted quads for people and config files.
"""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from proto.wire.checksum import internet_checksum, ones_complement_sum

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17

IPV4_VERSION = 4
MIN_HEADER_LENGTH = 20          # IHL 5: no options
MAX_HEADER_LENGTH = 60          # IHL 15: 40 bytes of options
MAX_TOTAL_LENGTH = 65535        # the 16-bit Total Length field
FRAGMENT_UNIT = 8               # Fragment Offset counts 8-byte units

_OFFSET_MASK = 0x1FFF           # low 13 bits of the flags/offset word
_HEADER = struct.Struct("!BBHHHBBH4s4s")


class Ipv4Flags(enum.IntFlag):
    """The 3-bit Flags field (RFC 791 section 3.1), as it sits above the offset."""
    MF = 0x1            # More Fragments
    DF = 0x2            # Don't Fragment
    RESERVED = 0x4      # must be zero when sent; ignored on receipt


NO_FLAGS = Ipv4Flags(0)


@dataclass(frozen=True, slots=True)
class Ipv4Header:
    """A parsed IPv4 header.  Version (4) and IHL are implied by `options`."""
    tos: int
    total_length: int
    ident: int
    flags: Ipv4Flags
    frag_offset: int            # in bytes (the field times 8)
    ttl: int
    protocol: int
    checksum: int
    src: bytes                  # 4 bytes
    dst: bytes                  # 4 bytes
    options: bytes = b""        # raw, padded to a multiple of 4

    @property
    def header_length(self) -> int:
        return MIN_HEADER_LENGTH + len(self.options)

    @property
    def payload_length(self) -> int:
        return self.total_length - self.header_length

    @property
    def dont_fragment(self) -> bool:
        return bool(self.flags & Ipv4Flags.DF)

    @property
    def more_fragments(self) -> bool:
        return bool(self.flags & Ipv4Flags.MF)

    @property
    def is_fragment(self) -> bool:
        """True for any piece of a fragmented datagram, the first included."""
        return bool(self.flags & Ipv4Flags.MF) or self.frag_offset != 0


class Ipv4ParseError(ValueError):
    """A packet that is not a valid IPv4 datagram; `reason` is the drop counter's name."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def parse_ipv4(packet: bytes | bytearray | memoryview) -> tuple[Ipv4Header, memoryview]:
    """Parse and validate one IPv4 datagram; return its header and payload.

    The payload is a zero-copy view of `packet`, cut at Total Length: trailing
    bytes (link-layer padding) are not an error.  Raises `Ipv4ParseError` with
    reason "truncated", "bad_version", "bad_header_length", "bad_total_length"
    or "bad_checksum".  Options are kept raw and not interpreted (a host must
    ignore options it does not know, RFC 1122 section 3.2.1.8).
    """
    length = len(packet)
    if length == 0:
        raise Ipv4ParseError("truncated")
    if packet[0] >> 4 != IPV4_VERSION:
        raise Ipv4ParseError("bad_version")
    if length < MIN_HEADER_LENGTH:
        raise Ipv4ParseError("truncated")
    header_length = (packet[0] & 0x0F) * 4
    if header_length < MIN_HEADER_LENGTH:
        raise Ipv4ParseError("bad_header_length")
    if header_length > length:
        raise Ipv4ParseError("truncated")
    (_, tos, total_length, ident, flags_offset, ttl, protocol, checksum,
     src, dst) = _HEADER.unpack_from(packet)
    if total_length < header_length:
        raise Ipv4ParseError("bad_total_length")
    if total_length > length:
        raise Ipv4ParseError("truncated")
    if ones_complement_sum(packet[:header_length]) != 0xFFFF:
        raise Ipv4ParseError("bad_checksum")
    header = Ipv4Header(
        tos=tos, total_length=total_length, ident=ident,
        flags=Ipv4Flags(flags_offset >> 13),
        frag_offset=(flags_offset & _OFFSET_MASK) * FRAGMENT_UNIT,
        ttl=ttl, protocol=protocol, checksum=checksum, src=src, dst=dst,
        options=bytes(packet[MIN_HEADER_LENGTH:header_length]),
    )
    return header, memoryview(packet)[header_length:total_length]


def build_ipv4(src: bytes, dst: bytes, protocol: int, payload: bytes | bytearray | memoryview,
               ttl: int = 64, ident: int = 0, df: bool = True, mf: bool = False,
               frag_offset: int = 0, tos: int = 0, options: bytes = b"") -> bytes:
    """One IPv4 packet: a header (checksum computed) followed by `payload`.

    `frag_offset` is in bytes and must be a multiple of 8.  `options` must be
    padded to a multiple of 4 bytes (RFC 791 section 3.1, "Padding").  Raises
    `ValueError` for a field that does not fit: that is a bug in the caller.
    """
    header_length = MIN_HEADER_LENGTH + len(options)
    total_length = header_length + len(payload)
    if len(src) != 4 or len(dst) != 4:
        raise ValueError("IPv4 addresses are 4 bytes")
    if len(options) % 4 or header_length > MAX_HEADER_LENGTH:
        raise ValueError("options must be padded to 4 bytes and at most 40 bytes")
    if total_length > MAX_TOTAL_LENGTH:
        raise ValueError(f"datagram of {total_length} bytes exceeds 65535")
    if frag_offset % FRAGMENT_UNIT or not 0 <= frag_offset <= _OFFSET_MASK * FRAGMENT_UNIT:
        raise ValueError(f"bad fragment offset {frag_offset}")
    flags = (Ipv4Flags.DF if df else 0) | (Ipv4Flags.MF if mf else 0)
    header = bytearray(_HEADER.pack(
        (IPV4_VERSION << 4) | (header_length // 4), tos, total_length, ident & 0xFFFF,
        (flags << 13) | (frag_offset // FRAGMENT_UNIT), ttl, protocol, 0, src, dst))
    if options:
        header += options
    checksum = internet_checksum(header)
    header[10] = checksum >> 8
    header[11] = checksum & 0xFF
    return b"".join((header, payload))          # the payload copied once


def build_ipv4_header(header: Ipv4Header) -> bytes:
    """The bytes of `header` exactly as its fields say, with a fresh checksum.

    Used to quote a datagram in an ICMP error and to re-serialize a reassembled
    header; `total_length` is written as given, whatever payload follows.
    """
    options = header.options
    header_length = MIN_HEADER_LENGTH + len(options)
    if len(options) % 4 or header_length > MAX_HEADER_LENGTH:
        raise ValueError("options must be padded to 4 bytes and at most 40 bytes")
    raw = bytearray(_HEADER.pack(
        (IPV4_VERSION << 4) | (header_length // 4), header.tos, header.total_length,
        header.ident, (int(header.flags) << 13) | (header.frag_offset // FRAGMENT_UNIT),
        header.ttl, header.protocol, 0, header.src, header.dst))
    raw += options
    checksum = internet_checksum(raw)
    raw[10] = checksum >> 8
    raw[11] = checksum & 0xFF
    return bytes(raw)


def addr_to_str(address: bytes) -> str:
    """Dotted-quad text of a 4-byte address: b"\\xc6\\x12\\x00\\x02" -> "198.18.0.2"."""
    if len(address) != 4:
        raise ValueError(f"an IPv4 address is 4 bytes, not {len(address)}")
    return "%d.%d.%d.%d" % tuple(address)


def str_to_addr(text: str) -> bytes:
    """The 4 bytes of a dotted quad: "198.18.0.2" -> b"\\xc6\\x12\\x00\\x02".

    Strict: exactly four decimal parts, each 0..255, no signs, spaces or leading
    zeros (which some parsers read as octal, so they are ambiguous).
    """
    parts = text.split(".")
    if len(parts) != 4:
        raise ValueError(f"not a dotted-quad IPv4 address: {text!r}")
    octets = []
    for part in parts:
        if not (part.isascii() and part.isdigit()) or len(part) > 3 \
                or (len(part) > 1 and part[0] == "0"):
            raise ValueError(f"not a dotted-quad IPv4 address: {text!r}")
        value = int(part)
        if value > 255:
            raise ValueError(f"not a dotted-quad IPv4 address: {text!r}")
        octets.append(value)
    return bytes(octets)


def is_unicast_source(address: bytes) -> bool:
    """Whether `address` may be the source of a datagram we accept or answer.

    RFC 1122 section 3.2.1.3: a host silently discards datagrams whose source
    is 0.0.0.0/8 (this network), 127/8 (loopback, never on a wire), a class D
    multicast or class E (which includes 255.255.255.255) address; and it sends
    no ICMP error to such a source (section 3.2.2).
    """
    first = address[0]
    return first != 0 and first != 127 and first < 224
