"""The TCP header and its options (RFC 9293 section 3.1, RFC 7323, RFC 2018).

Two levels: `TcpSegment` is the parsed, validated form; `parse_tcp` and
`build_tcp` convert to and from bytes, checksum included.
(STUB: interface fixed; parse/build to be completed.)
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field


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


def parse_tcp(data: bytes, src_ip: bytes, dst_ip: bytes, verify_checksum: bool = True) -> TcpSegment:
    raise NotImplementedError


def build_tcp(seg: TcpSegment, src_ip: bytes, dst_ip: bytes) -> bytes:
    raise NotImplementedError
