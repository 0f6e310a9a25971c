"""The classic libpcap file format (what tcpdump -w writes and Wireshark reads).

A file is one 24-byte global header followed by records, each a 16-byte
record header and the captured bytes::

    global:  magic u32, version 2.4 (u16 u16), thiszone i32, sigfigs u32, snaplen u32, linktype u32
    record:  ts_sec u32, ts_usec u32, incl_len u32, orig_len u32, then incl_len bytes

Written in the machine's byte order with the microsecond magic 0xa1b2c3d4 and
LINKTYPE_RAW (101: each record is a bare IP packet, which is what a TUN device
without packet information carries).  The reader takes either byte order, the
microsecond and the nanosecond magic, and the link types a capture of an IP
device usually has (raw, IPv4, Ethernet, Linux cooked, BSD loopback), and hands
back bare IP packets.

Pure: builds and parses bytes; the caller owns the file and the clock.
"""
from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from typing import Iterator

MAGIC_MICRO = 0xA1B2C3D4
MAGIC_NANO = 0xA1B23C4D
VERSION = (2, 4)
DEFAULT_SNAPLEN = 262144

LINKTYPE_NULL = 0           # BSD loopback: 4-byte address family in host order
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101          # bare IPv4 or IPv6 packets
LINKTYPE_LINUX_SLL = 113    # Linux "cooked" capture (tcpdump -i any)
LINKTYPE_IPV4 = 228

_ORDER = "<" if sys.byteorder == "little" else ">"
_GLOBAL = struct.Struct(_ORDER + "IHHiIII")
_RECORD = struct.Struct(_ORDER + "IIII")
GLOBAL_HEADER_LEN = _GLOBAL.size     # 24
RECORD_HEADER_LEN = _RECORD.size     # 16
_MAX_RECORD = 1 << 26                # larger than any real record: the file is damaged


class PcapError(ValueError):
    """Bytes that are not a pcap file, or one cut short."""


# -- writing -------------------------------------------------------------------

def file_header(snaplen: int = DEFAULT_SNAPLEN, linktype: int = LINKTYPE_RAW) -> bytes:
    """The 24-byte global header that starts every file."""
    return _GLOBAL.pack(MAGIC_MICRO, VERSION[0], VERSION[1], 0, 0, snaplen, linktype)


def record_header(timestamp: float, captured: int, original: int | None = None) -> bytes:
    """The 16-byte header of one record: `timestamp` in seconds since the epoch
    (rounded to the microsecond), `captured` bytes follow, `original` is the
    packet's length on the wire (default: all of it was captured)."""
    micros = round(timestamp * 1_000_000)
    seconds, micros = divmod(micros, 1_000_000)
    return _RECORD.pack(seconds, micros, captured, captured if original is None else original)


def record(timestamp: float, packet: bytes | bytearray | memoryview, snaplen: int = DEFAULT_SNAPLEN) -> bytes:
    """One whole record (header and at most `snaplen` bytes of `packet`)."""
    captured = min(len(packet), snaplen)
    return record_header(timestamp, captured, len(packet)) + bytes(packet[:captured])


# -- reading -------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PcapHeader:
    byte_order: str         # "<" or ">"
    nanoseconds: bool
    version: tuple[int, int]
    snaplen: int
    linktype: int


@dataclass(frozen=True, slots=True)
class PcapRecord:
    time: float             # seconds since the epoch
    data: bytes             # the captured bytes, link-layer header included
    original_length: int


def parse_header(data: bytes | bytearray | memoryview) -> PcapHeader:
    if len(data) < GLOBAL_HEADER_LEN:
        raise PcapError("shorter than a pcap global header")
    for order in ("<", ">"):
        (magic,) = struct.unpack_from(order + "I", data)
        if magic in (MAGIC_MICRO, MAGIC_NANO):
            break
    else:
        raise PcapError(f"not a pcap file (magic {bytes(data[:4]).hex()})")
    _, major, minor, _zone, _sigfigs, snaplen, linktype = struct.unpack_from(order + "IHHiIII", data)
    return PcapHeader(order, magic == MAGIC_NANO, (major, minor), snaplen, linktype & 0x0FFFFFFF)


def iter_records(data: bytes | bytearray | memoryview) -> Iterator[PcapRecord]:
    """Every record of a whole file, in file order.  A record cut short at the
    end (a capture still being written, or killed) ends the iteration; any
    other damage is a PcapError."""
    header = parse_header(data)
    rec = struct.Struct(header.byte_order + "IIII")
    divisor = 1e9 if header.nanoseconds else 1e6
    view = memoryview(data)
    offset, end = GLOBAL_HEADER_LEN, len(data)
    while offset + RECORD_HEADER_LEN <= end:
        seconds, fraction, captured, original = rec.unpack_from(view, offset)
        offset += RECORD_HEADER_LEN
        if captured > _MAX_RECORD:
            raise PcapError(f"record at byte {offset - RECORD_HEADER_LEN} claims {captured} bytes")
        if offset + captured > end:
            return
        yield PcapRecord(seconds + fraction / divisor, bytes(view[offset:offset + captured]), original)
        offset += captured


def read_pcap(data: bytes | bytearray | memoryview) -> tuple[PcapHeader, list[PcapRecord]]:
    """The global header and every record of a whole file."""
    return parse_header(data), list(iter_records(data))


def ip_packet(linktype: int, frame: bytes) -> bytes | None:
    """The IP packet inside one captured frame, or None if it carries something else."""
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4):
        return frame
    if linktype == LINKTYPE_ETHERNET:
        if len(frame) >= 14 and frame[12:14] == b"\x08\x00":
            return frame[14:]
        return None
    if linktype == LINKTYPE_LINUX_SLL:
        if len(frame) >= 16 and frame[14:16] == b"\x08\x00":
            return frame[16:]
        return None
    if linktype == LINKTYPE_NULL:
        if len(frame) >= 4 and 2 in (frame[0], frame[3]):      # AF_INET in either byte order
            return frame[4:]
        return None
    return None


def ip_packets(data: bytes | bytearray | memoryview) -> list[tuple[float, bytes]]:
    """(time, IP packet) for every record of a file that holds an IP packet."""
    header = parse_header(data)
    packets = []
    for rec in iter_records(data):
        packet = ip_packet(header.linktype, rec.data)
        if packet is not None:
            packets.append((rec.time, packet))
    return packets
