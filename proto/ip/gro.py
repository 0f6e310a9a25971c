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


def coalesce(segments: list, trusted: set[int]) -> tuple[list, list[int]]:
    """`segments` are (src, dst, tcp segment bytes) in arrival order and `trusted` the
    indices whose checksums are vouched for already.  Returns the segments with runs
    merged, and the indices of the vouched-for ones among them."""
    if len(segments) < 2:
        return segments, sorted(trusted)
    out: list = []
    out_trusted: list[int] = []
    run: list = []                 # (seq, payload view) of the run being built
    first = None                   # (src, dst, header bytes, key fields) of its first segment
    size = 0

    def finish() -> None:
        nonlocal run, first, size
        if first is not None:
            if len(run) == 1:
                out.append((first[0], first[1], first[4]))
            else:
                out.append((first[0], first[1], first[2] + b"".join(payload for _, payload in run)))
            out_trusted.append(len(out) - 1)
        run, first, size = [], None, 0

    for i, (src, dst, data) in enumerate(segments):
        length = len(data)
        if length < 20 or data[13] not in (_ACK, _PSH_ACK):
            finish()
            out.append((src, dst, data))            # control segments, runts: as they came
            if i in trusted:
                out_trusted.append(len(out) - 1)
            continue
        header_len = (data[12] >> 4) * 4
        if header_len < 20 or header_len >= length:   # malformed, or no payload (a pure ACK)
            finish()
            out.append((src, dst, data))
            if i in trusted:
                out_trusted.append(len(out) - 1)
            continue
        if i not in trusted and \
                ones_complement_sum(data, pseudo_header_sum(src, dst, PROTO_TCP, length)) != 0xFFFF:
            finish()
            out.append((src, dst, data))            # tcpd counts and drops it
            continue
        sport, dport, seq, ack = _PORTS_SEQ_ACK.unpack_from(data)
        payload = memoryview(data)[header_len:]
        # what must be equal for segments to merge: addresses, ports, ack, window, options
        key = (src, dst, sport, dport, ack, bytes(data[14:16]), bytes(data[20:header_len]))
        if first is not None and key == first[3] and seq == (run[-1][0] + len(run[-1][1])) & 0xFFFFFFFF \
                and len(run[-1][1]) == len(run[0][1]) and len(payload) <= len(run[0][1]) \
                and size + len(payload) <= MAX_MERGED and data[13] in (_ACK, _PSH_ACK) \
                and first[2][13] == _ACK:
            run.append((seq, payload))
            size += len(payload)
            if data[13] == _PSH_ACK:                 # PSH ends the run, and the merged segment carries it
                first = (first[0], first[1], first[2][:13] + bytes((_PSH_ACK,)) + first[2][14:],
                         first[3], first[4])
                finish()
            continue
        finish()
        first = (src, dst, bytes(data[:header_len]), key, data)
        run, size = [(seq, payload)], len(payload)
        if data[13] == _PSH_ACK:
            finish()
    finish()
    return out, out_trusted
