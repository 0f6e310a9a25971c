"""The TCP header and its options (RFC 9293 section 3.1, RFC 7323, RFC 2018).

Two levels: `TcpSegment` is the parsed, validated form; `parse_tcp` and
`build_tcp` convert to and from bytes, checksum included.
Unknown options are skipped by their length; a malformed option length makes
the whole segment a `TcpParseError("bad_option")`.
"""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from proto.wire.checksum import ones_complement_sum, pseudo_header_sum


class TcpFlags(enum.IntFlag):
    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80


@dataclass(frozen=True, slots=True)
class TcpOptions:
    mss: int | None = None
    window_scale: int | None = None
    sack_permitted: bool = False
    timestamps: tuple[int, int] | None = None      # (TSval, TSecr)
    sack_blocks: tuple[tuple[int, int], ...] = ()


NO_OPTIONS = TcpOptions()


@dataclass(frozen=True, slots=True)
class TcpSegment:
    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: TcpFlags
    window: int                 # the raw 16-bit field, unscaled
    urgent: int = 0
    options: TcpOptions = NO_OPTIONS
    payload: bytes = b""

    @property
    def seg_len(self) -> int:
        """SEG.LEN: payload bytes plus one for SYN and one for FIN."""
        return len(self.payload) + (1 if self.flags & TcpFlags.SYN else 0) + (1 if self.flags & TcpFlags.FIN else 0)


class TcpParseError(ValueError):
    """A segment that cannot be parsed; `reason` is the drop counter's name."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


_HEADER = struct.Struct("!HHIIBBHHH")
HEADER_LEN = 20
PROTO_TCP = 6

OPT_EOL, OPT_NOP, OPT_MSS, OPT_WSCALE, OPT_SACK_PERM, OPT_SACK, OPT_TIMESTAMPS = 0, 1, 2, 3, 4, 5, 8
_FIXED_LENGTHS = {OPT_MSS: 4, OPT_WSCALE: 3, OPT_SACK_PERM: 2, OPT_TIMESTAMPS: 10}
FLAGS_BY_VALUE = tuple(TcpFlags(i) for i in range(256))   # int -> TcpFlags without enum arithmetic


def _parse_options(raw: bytes) -> TcpOptions:
    mss = wscale = timestamps = None
    sack_permitted = False
    sack_blocks: tuple[tuple[int, int], ...] = ()
    i, end = 0, len(raw)
    while i < end:
        kind = raw[i]
        if kind == OPT_EOL:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= end:
            raise TcpParseError("bad_option")
        length = raw[i + 1]
        if length < 2 or i + length > end:
            raise TcpParseError("bad_option")
        fixed = _FIXED_LENGTHS.get(kind)
        if fixed is not None and length != fixed:
            raise TcpParseError("bad_option")
        if kind == OPT_MSS:
            mss = (raw[i + 2] << 8) | raw[i + 3]
        elif kind == OPT_WSCALE:
            wscale = raw[i + 2]
        elif kind == OPT_SACK_PERM:
            sack_permitted = True
        elif kind == OPT_TIMESTAMPS:
            timestamps = struct.unpack_from("!II", raw, i + 2)
        elif kind == OPT_SACK:
            if (length - 2) % 8 or length == 2:
                raise TcpParseError("bad_option")
            values = struct.unpack_from("!%dI" % ((length - 2) // 4), raw, i + 2)
            sack_blocks = tuple(zip(values[0::2], values[1::2]))
        i += length
    return TcpOptions(mss=mss, window_scale=wscale, sack_permitted=sack_permitted,
                      timestamps=timestamps, sack_blocks=sack_blocks)


def parse_tcp(data: bytes, src_ip: bytes, dst_ip: bytes, verify_checksum: bool = True) -> TcpSegment:
    """Parse and validate one TCP segment (header, options, payload).

    `src_ip`/`dst_ip` are the 4-byte IPv4 addresses for the pseudo-header.
    Raises TcpParseError with reason truncated, bad_data_offset, bad_checksum
    or bad_option.
    """
    length = len(data)
    if length < HEADER_LEN:
        raise TcpParseError("truncated")
    src_port, dst_port, seq, ack, offset_byte, flags, window, _checksum, urgent = _HEADER.unpack_from(data)
    header_len = (offset_byte >> 4) * 4
    if header_len < HEADER_LEN:
        raise TcpParseError("bad_data_offset")
    if header_len > length:
        raise TcpParseError("truncated")
    if verify_checksum:
        if ones_complement_sum(data, pseudo_header_sum(src_ip, dst_ip, PROTO_TCP, length)) != 0xFFFF:
            raise TcpParseError("bad_checksum")
    options = _parse_options(data[HEADER_LEN:header_len]) if header_len > HEADER_LEN else NO_OPTIONS
    payload = bytes(data[header_len:]) if header_len < length else b""
    return TcpSegment(src_port, dst_port, seq, ack, FLAGS_BY_VALUE[flags], window, urgent, options, payload)


def _build_options(o: TcpOptions) -> bytes:
    if o is NO_OPTIONS or o == NO_OPTIONS:
        return b""
    out = bytearray()
    if o.mss is not None:
        out += struct.pack("!BBH", OPT_MSS, 4, o.mss)
    if o.sack_permitted and o.timestamps is not None:
        out += struct.pack("!BBBBII", OPT_SACK_PERM, 2, OPT_TIMESTAMPS, 10, *o.timestamps)
    elif o.timestamps is not None:
        out += struct.pack("!BBBBII", OPT_NOP, OPT_NOP, OPT_TIMESTAMPS, 10, *o.timestamps)
    elif o.sack_permitted:
        out += bytes((OPT_NOP, OPT_NOP, OPT_SACK_PERM, 2))
    if o.window_scale is not None:
        out += bytes((OPT_NOP, OPT_WSCALE, 3, o.window_scale))
    if o.sack_blocks:
        out += bytes((OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * len(o.sack_blocks)))
        for left, right in o.sack_blocks:
            out += struct.pack("!II", left, right)
    if len(out) % 4:
        out += b"\0" * (4 - len(out) % 4)          # EOL padding
    if len(out) > 40:
        raise ValueError("TCP options longer than 40 bytes")
    return bytes(out)


def build_tcp(seg: TcpSegment, src_ip: bytes, dst_ip: bytes, offload_checksum: bool = False) -> bytes:
    """The bytes of `seg`, checksum filled in.

    With `offload_checksum` the device completes it (CHECKSUM_PARTIAL): the field
    holds only the folded pseudo-header sum, as Linux leaves it for a NIC.
    """
    options = _build_options(seg.options)
    header_len = HEADER_LEN + len(options)
    payload = seg.payload
    header = _HEADER.pack(seg.src_port, seg.dst_port, seg.seq & 0xFFFFFFFF, seg.ack & 0xFFFFFFFF,
                          (header_len // 4) << 4, int(seg.flags) & 0xFF, seg.window, 0, seg.urgent) + options
    total = header_len + len(payload)
    partial = pseudo_header_sum(src_ip, dst_ip, PROTO_TCP, total)
    if offload_checksum:
        checksum = ones_complement_sum(b"", partial)
        return header[:16] + checksum.to_bytes(2, "big") + header[18:] + payload
    if payload:
        partial = ones_complement_sum(payload, partial)
    checksum = ~ones_complement_sum(header, partial) & 0xFFFF
    return header[:16] + checksum.to_bytes(2, "big") + header[18:] + payload
