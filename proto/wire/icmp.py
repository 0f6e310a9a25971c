"""ICMP messages (RFC 792), the ones a host needs (RFC 1122 section 3.2.2).

Every ICMP message has the same first 8 bytes: type, code, checksum, and 32
bits whose meaning depends on the type ("rest of header": identifier and
sequence number for echo, the next-hop MTU for "fragmentation needed" (RFC
1191 section 4), unused for the other errors).  `IcmpMessage` keeps those 32
bits as one integer and offers named views of them.

An error message quotes the offending datagram: its IP header and the first
8 bytes of its payload (RFC 792; RFC 1122 section 3.2.2), enough for the
sender to find the TCP connection by its ports.
"""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from proto.wire.checksum import internet_checksum, ones_complement_sum

ICMP_HEADER_LENGTH = 8
QUOTED_PAYLOAD_BYTES = 8

_HEADER = struct.Struct("!BBHI")


class IcmpType(enum.IntEnum):
    ECHO_REPLY = 0
    DEST_UNREACHABLE = 3
    SOURCE_QUENCH = 4
    REDIRECT = 5
    ECHO_REQUEST = 8
    TIME_EXCEEDED = 11
    PARAMETER_PROBLEM = 12
    TIMESTAMP_REQUEST = 13
    TIMESTAMP_REPLY = 14


class UnreachableCode(enum.IntEnum):
    """Codes of Destination Unreachable (RFC 792, RFC 1122 section 3.2.2.1)."""
    NET = 0
    HOST = 1
    PROTOCOL = 2
    PORT = 3
    FRAGMENTATION_NEEDED = 4        # and DF set; carries the next-hop MTU (RFC 1191)
    SOURCE_ROUTE_FAILED = 5


class TimeExceededCode(enum.IntEnum):
    """Codes of Time Exceeded (RFC 792)."""
    TTL_EXCEEDED = 0
    REASSEMBLY = 1                  # fragment reassembly time exceeded


ERROR_TYPES = frozenset({
    IcmpType.DEST_UNREACHABLE, IcmpType.SOURCE_QUENCH, IcmpType.REDIRECT,
    IcmpType.TIME_EXCEEDED, IcmpType.PARAMETER_PROBLEM,
})
LAST_KNOWN_TYPE = 18    # Linux's NR_ICMP_TYPES: a type above it is treated like an error


def is_error_type(icmp_type: int) -> bool:
    """Whether a message of this type must never be answered with an ICMP error.

    RFC 1122 section 3.2.2: no ICMP error about an ICMP error.  Like Linux's
    `icmp_send`, a type it does not know counts as an error, to be safe.
    """
    return icmp_type in ERROR_TYPES or icmp_type > LAST_KNOWN_TYPE


@dataclass(frozen=True, slots=True)
class IcmpMessage:
    """A parsed ICMP message; `body` is everything after the 8-byte header."""
    type: int
    code: int
    checksum: int
    rest_of_header: int             # the 32 bits after the checksum
    body: bytes

    @property
    def identifier(self) -> int:
        """Echo request/reply: the identifier (RFC 792, "Echo or Echo Reply Message")."""
        return self.rest_of_header >> 16

    @property
    def sequence(self) -> int:
        """Echo request/reply: the sequence number."""
        return self.rest_of_header & 0xFFFF

    @property
    def next_hop_mtu(self) -> int:
        """Fragmentation needed: the MTU of the next hop (RFC 1191 section 4)."""
        return self.rest_of_header & 0xFFFF

    @property
    def is_error(self) -> bool:
        return is_error_type(self.type)


class IcmpParseError(ValueError):
    """A message that cannot be parsed; `reason` is the drop counter's name."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def parse_icmp(data: bytes | bytearray | memoryview) -> IcmpMessage:
    """Parse one ICMP message and verify its checksum (RFC 792: over the whole message).

    Raises `IcmpParseError` with reason "truncated" (shorter than 8 bytes) or
    "bad_checksum".
    """
    if len(data) < ICMP_HEADER_LENGTH:
        raise IcmpParseError("truncated")
    if ones_complement_sum(data) != 0xFFFF:
        raise IcmpParseError("bad_checksum")
    icmp_type, code, checksum, rest = _HEADER.unpack_from(data)
    return IcmpMessage(icmp_type, code, checksum, rest, bytes(data[ICMP_HEADER_LENGTH:]))


def build_icmp(icmp_type: int, code: int, rest_of_header: int,
               body: bytes | bytearray | memoryview = b"") -> bytes:
    """One ICMP message with its checksum computed."""
    header = _HEADER.pack(icmp_type, code, 0, rest_of_header)
    checksum = internet_checksum(body, ones_complement_sum(header))
    return header[:2] + checksum.to_bytes(2, "big") + header[4:] + bytes(body)


def build_echo_request(identifier: int, sequence: int, data: bytes = b"") -> bytes:
    return build_icmp(IcmpType.ECHO_REQUEST, 0, (identifier << 16) | sequence, data)


def build_echo_reply(identifier: int, sequence: int, data: bytes | memoryview = b"") -> bytes:
    """The answer to an echo request: same identifier, sequence and data (RFC 792)."""
    return build_icmp(IcmpType.ECHO_REPLY, 0, (identifier << 16) | sequence, data)


def quote_offending_datagram(datagram: bytes | bytearray | memoryview) -> bytes:
    """The part of an offending datagram an ICMP error carries: IP header + 8 bytes.

    `datagram` starts with a valid IPv4 header; anything after the first 8
    bytes of its payload is cut (RFC 792, "Internet Header + 64 bits of
    Original Data Datagram").
    """
    header_length = (datagram[0] & 0x0F) * 4
    return bytes(datagram[:header_length + QUOTED_PAYLOAD_BYTES])


def build_dest_unreachable(code: int, offending_datagram: bytes | memoryview,
                           next_hop_mtu: int = 0) -> bytes:
    """Destination Unreachable quoting `offending_datagram` (RFC 792, RFC 1191 section 4)."""
    rest = next_hop_mtu & 0xFFFF if code == UnreachableCode.FRAGMENTATION_NEEDED else 0
    return build_icmp(IcmpType.DEST_UNREACHABLE, code, rest,
                      quote_offending_datagram(offending_datagram))


def build_time_exceeded(code: int, offending_datagram: bytes | memoryview) -> bytes:
    """Time Exceeded quoting `offending_datagram` (RFC 792; code 1: reassembly, RFC 1122 3.3.2)."""
    return build_icmp(IcmpType.TIME_EXCEEDED, code, 0, quote_offending_datagram(offending_datagram))


@dataclass(frozen=True, slots=True)
class QuotedDatagram:
    """What an ICMP error tells about the datagram it complains of."""
    src: bytes
    dst: bytes
    protocol: int
    transport_head: bytes           # first bytes of its payload (8, or fewer if cut)


def parse_quoted_datagram(body: bytes | memoryview) -> QuotedDatagram:
    """Read the IP header quoted in an ICMP error's body (for the transport layer).

    The quote's checksum and total length are not checked: they describe the
    original datagram, not the quote.  Raises `IcmpParseError("bad_quote")`.
    """
    if len(body) < 20 or body[0] >> 4 != 4:
        raise IcmpParseError("bad_quote")
    header_length = (body[0] & 0x0F) * 4
    if header_length < 20 or header_length > len(body):
        raise IcmpParseError("bad_quote")
    return QuotedDatagram(src=bytes(body[12:16]), dst=bytes(body[16:20]), protocol=body[9],
                          transport_head=bytes(body[header_length:header_length + QUOTED_PAYLOAD_BYTES]))
