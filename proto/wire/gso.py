"""Segmentation offload in software (Linux's GSO, skb_gso_segment for a device
without TSO): a TCP super-segment of whole MSS-sized pieces becomes the
packets the wire carries, each with its own IPv4 and TCP header and checksums.

tcpd then builds one segment per window opening instead of one per MSS, and
nicd cuts it, as Linux cuts in the device layer, just before the driver.  The
pieces take the first header with the sequence number advanced; FIN and PSH
stay on the last piece, CWR on the first (RFC 3168), the IP id counts up.
"""
from __future__ import annotations

import struct

from proto.wire.checksum import ones_complement_sum, pseudo_header_sum

_PROTO_TCP = 6
_FIN_PSH = 0x09
_CWR = 0x80
_IP_LEN_ID = struct.Struct("!HH")
_SEQ = struct.Struct("!I")


def segment_tcp(packet, mtu: int) -> list:
    """The wire packets of an IPv4 TCP `packet`: [packet] if it fits `mtu` or is
    not a TCP super-segment; else one packet per MSS (mtu - headers) of payload."""
    if len(packet) <= mtu or packet[9] != _PROTO_TCP or packet[0] >> 4 != 4 or packet[6] & 0x3F or packet[7]:
        return [packet]                 # fits, not TCP, or a fragment: as it is
    ip_len = (packet[0] & 0x0F) * 4
    if ip_len < 20:
        return [packet]                 # malformed: the device (or the kernel behind it) drops it
    tcp_len = (packet[ip_len + 12] >> 4) * 4
    headers = ip_len + tcp_len
    mss = mtu - headers
    total = (packet[2] << 8) | packet[3]
    if tcp_len < 20 or mss <= 0 or total > len(packet) or total <= headers:
        return [packet]
    view = memoryview(packet)
    ip_header = bytearray(view[:ip_len])
    tcp_header = bytearray(view[ip_len:headers])
    src, dst = bytes(view[12:16]), bytes(view[16:20])
    ident = (packet[4] << 8) | packet[5]
    seq = _SEQ.unpack_from(tcp_header, 4)[0]
    flags = tcp_header[13]
    pieces = []
    offset = headers
    while offset < total:
        end = min(offset + mss, total)
        last = end == total
        payload = view[offset:end]
        ip_header[10:12] = b"\0\0"
        _IP_LEN_ID.pack_into(ip_header, 2, ip_len + tcp_len + len(payload), ident)
        ip_header[10:12] = (~ones_complement_sum(ip_header) & 0xFFFF).to_bytes(2, "big")
        _SEQ.pack_into(tcp_header, 4, seq)
        tcp_header[13] = flags if last else flags & ~_FIN_PSH
        if offset != headers:
            tcp_header[13] &= ~_CWR
        tcp_header[16:18] = b"\0\0"
        partial = pseudo_header_sum(src, dst, _PROTO_TCP, tcp_len + len(payload))
        checksum = ~ones_complement_sum(payload, ones_complement_sum(tcp_header, partial)) & 0xFFFF
        tcp_header[16:18] = checksum.to_bytes(2, "big")
        pieces.append(bytes(ip_header) + bytes(tcp_header) + payload)
        seq = (seq + len(payload)) & 0xFFFFFFFF
        ident = (ident + 1) & 0xFFFF
        offset = end
    return pieces
