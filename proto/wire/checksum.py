"""The Internet checksum (RFC 1071) and the TCP/UDP pseudo-header.

The one's-complement sum of 16-bit words equals the whole buffer, read as one
big-endian integer, modulo 0xFFFF (because 2**16 == 1 mod 0xFFFF).  CPython's
big integers do that in C, so this is the fastest pure-Python checksum there is.
"""

_FOLD = 0xFFFF


def ones_complement_sum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The 16-bit one's-complement sum of `data` (padded to even length) plus `initial`."""
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8                     # the zero pad byte of an odd length, without copying the data
    value += initial
    if value == 0:
        return 0
    value %= _FOLD
    return value or _FOLD


def internet_checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The checksum to put in a header: the complement of the one's-complement sum."""
    return ~ones_complement_sum(data, initial) & 0xFFFF


def pseudo_header_sum(src: bytes, dst: bytes, protocol: int, length: int) -> int:
    """The one's-complement sum of the IPv4 pseudo-header (RFC 9293 section 3.1)."""
    return (int.from_bytes(src, "big") >> 16) + (int.from_bytes(src, "big") & 0xFFFF) + \
        (int.from_bytes(dst, "big") >> 16) + (int.from_bytes(dst, "big") & 0xFFFF) + protocol + length
