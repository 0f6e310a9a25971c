"""Receive coalescing (Linux's GRO, tcp_gro_receive): consecutive in-order
segments of one connection that arrived in the same batch become one segment
before TCP sees them, so tcpd runs its input path, and sends its ACK, once
per batch instead of once or twice per segment.

Segments merge only when Linux would merge them: the same four-tuple, ACK
only (PSH may end a run), the same acknowledgment, window and options, each
starting where the one before ended, all of one size but the last, and at
most 64 KiB in all.  Each segment's checksum is verified here first (one that
fails is passed on as it is, for tcpd to count and drop); the merged segment
is then vouched for, as a NIC vouches for what it coalesced.
"""
from __future__ import annotations

import struct

from proto.wire.checksum import ones_complement_sum, pseudo_header_sum
from proto.wire.ipv4 import PROTO_TCP

_PORTS_SEQ_ACK = struct.Struct("!HHII")
_ACK, _PSH_ACK = 0x10, 0x18
MAX_MERGED = 65535 - 40            # payload of one IPv4 packet with plain headers


class _Run:
    """Segments being merged: the first one's header, then every payload."""

    def __init__(self, src: bytes, dst: bytes, data, header_len: int, key: tuple, seq: int):
        self.src, self.dst, self.first, self.key = src, dst, data, key
        self.header = bytearray(data[:header_len])
        self.payloads = [memoryview(data)[header_len:]]
        self.piece = self.size = len(self.payloads[0])      # all pieces but the last are this long
        self.next_seq = (seq + self.size) & 0xFFFFFFFF

    def takes(self, key: tuple, seq: int, size: int) -> bool:
        return (key == self.key and seq == self.next_seq and len(self.payloads[-1]) == self.piece
                and size <= self.piece and self.size + size <= MAX_MERGED)

    def add(self, payload: memoryview) -> None:
        self.payloads.append(payload)
        self.size += len(payload)
        self.next_seq = (self.next_seq + len(payload)) & 0xFFFFFFFF

    def segment(self):
        if len(self.payloads) == 1:
            return self.first
        return bytes(self.header) + b"".join(self.payloads)


def coalesce(segments: list, trusted: set[int]) -> tuple[list, list[int]]:
    """`segments` are (src, dst, tcp segment bytes) in arrival order and `trusted` the
    indices whose checksums are vouched for already.  Returns the segments with runs
    merged, and the indices of the vouched-for ones among them."""
    if len(segments) < 2:
        return segments, sorted(trusted)
    out: list = []
    vouched: list[int] = []
    run: _Run | None = None

    def end_run() -> None:
        nonlocal run
        if run is not None:
            vouched.append(len(out))
            out.append((run.src, run.dst, run.segment()))
            run = None

    def pass_on(src: bytes, dst: bytes, data, checked: bool) -> None:
        end_run()
        if checked:
            vouched.append(len(out))
        out.append((src, dst, data))

    for i, (src, dst, data) in enumerate(segments):
        length = len(data)
        flags = data[13] if length >= 20 else 0
        header_len = (data[12] >> 4) * 4 if length >= 20 else 0
        if flags not in (_ACK, _PSH_ACK) or not 20 <= header_len < length:
            pass_on(src, dst, data, i in trusted)        # control, pure ACK, runt: as it came
            continue
        if i not in trusted and \
                ones_complement_sum(data, pseudo_header_sum(src, dst, PROTO_TCP, length)) != 0xFFFF:
            pass_on(src, dst, data, False)               # tcpd counts and drops it
            continue
        sport, dport, seq, ack = _PORTS_SEQ_ACK.unpack_from(data)
        # what must be equal for segments to merge: addresses, ports, ack, window, options
        key = (src, dst, sport, dport, ack, bytes(data[14:16]), bytes(data[20:header_len]))
        if run is not None and run.takes(key, seq, length - header_len):
            run.add(memoryview(data)[header_len:])
        else:
            end_run()
            run = _Run(src, dst, data, header_len, key, seq)
        if flags == _PSH_ACK:                               # PSH ends the run; the merged segment carries it
            run.header[13] = _PSH_ACK
            end_run()
    end_run()
    return out, vouched
