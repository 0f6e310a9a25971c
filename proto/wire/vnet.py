"""The virtio-net header a TUN device opened with IFF_VNET_HDR puts before each
packet (struct virtio_net_hdr, 10 bytes, host byte order): how the kernel and
the driver hand each other TCP super-segments (GSO/TSO) and checksums left to do.

Pure: the driver (nicd) calls these on every packet when offloads are on.
"""
from __future__ import annotations

import struct

from proto.wire.checksum import ones_complement_sum

HEADER = struct.Struct("=BBHHHH")      # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
SIZE = HEADER.size
NEEDS_CSUM = 0x01                      # VIRTIO_NET_HDR_F_NEEDS_CSUM
GSO_NONE, GSO_TCPV4 = 0, 1             # VIRTIO_NET_HDR_GSO_*
PLAIN = HEADER.pack(0, GSO_NONE, 0, 0, 0, 0)
_PROTO_TCP = 6


def from_device(frame: bytes) -> tuple[bytes, tuple[int, int] | None]:
    """(the IP packet in a frame read from the device, where its checksum is left to do or None).

    With TUN_F_CSUM the kernel may leave the transport checksum to the device
    (CHECKSUM_PARTIAL: the field holds only the pseudo-header sum; the sum runs
    from csum_start and goes at csum_start + csum_offset).  Such a packet was
    made by the kernel and never crossed a wire, so, as Linux does for
    CHECKSUM_PARTIAL, the driver may vouch for it instead of summing it (and
    tcpd summing it again); `complete_checksum` fills it in when the packet
    must stand on its own.  A super-segment (gso_type TCPV4) is passed on
    whole: TCP takes it as one segment, as Linux's GRO would.
    """
    flags, _gso_type, _hdr_len, _gso_size, csum_start, csum_offset = HEADER.unpack_from(frame)
    return frame[SIZE:], ((csum_start, csum_offset) if flags & NEEDS_CSUM else None)


def complete_checksum(packet: bytes, csum_start: int, csum_offset: int) -> bytes:
    """The packet with its CHECKSUM_PARTIAL transport checksum filled in."""
    where = csum_start + csum_offset
    if where + 2 > len(packet):
        return packet               # nonsense offsets: the checksum check downstream drops it
    packet = bytearray(packet)
    checksum = ~ones_complement_sum(memoryview(packet)[csum_start:]) & 0xFFFF
    packet[where] = checksum >> 8
    packet[where + 1] = checksum & 0xFF
    return bytes(packet)


def complete_tcp_checksum(packet: bytes) -> bytes:
    """A TCP packet whose checksum field holds only the pseudo-header sum (left to the device),
    completed; any other packet as it is."""
    if len(packet) < 40 or packet[9] != _PROTO_TCP:
        return packet
    return complete_checksum(packet, (packet[0] & 0x0F) * 4, 16)


def to_device(packet: bytes, mtu: int) -> tuple[bytes, bytes]:
    """(virtio-net header, packet) for a packet to write to the device.

    Every TCP packet leaves its checksum to the kernel (tcpd wrote only the
    pseudo-header sum: NEEDS_CSUM from the TCP header on).  A TCP packet above
    the MTU is a super-segment: the kernel cuts it into segments of MTU -
    headers bytes of payload (gso_size, the MSS that tcpd segmented at).
    """
    if len(packet) < 40 or packet[9] != _PROTO_TCP:
        return PLAIN, packet
    ip_header = (packet[0] & 0x0F) * 4
    if ip_header < 20 or ip_header + 20 > len(packet):
        return PLAIN, packet            # malformed (a hostile dev_tx): as it is, the kernel judges it
    if len(packet) <= mtu:
        return HEADER.pack(NEEDS_CSUM, GSO_NONE, 0, 0, ip_header, 16), packet
    headers = ip_header + (packet[ip_header + 12] >> 4) * 4
    if headers < ip_header + 20 or headers >= min(len(packet), mtu):
        return PLAIN, packet
    return HEADER.pack(NEEDS_CSUM, GSO_TCPV4, headers, mtu - headers, ip_header, 16), packet
