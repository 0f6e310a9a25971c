"""Sequence-number arithmetic modulo 2**32 (RFC 9293 section 3.4).

Every comparison of sequence or acknowledgment numbers in the TCP code goes
through these functions; nothing else compares them with < or >.
Values are plain ints in [0, 2**32) so that the common path stays cheap.
"""

MOD = 1 << 32
MASK = MOD - 1
HALF = 1 << 31


def add(a: int, n: int) -> int:
    """a + n modulo 2**32."""
    return (a + n) & MASK


def diff(a: int, b: int) -> int:
    """The signed distance a - b, in [-2**31, 2**31)."""
    d = (a - b) & MASK
    return d - MOD if d >= HALF else d


def lt(a: int, b: int) -> bool:
    """a < b modulo 2**32."""
    return 0 < ((b - a) & MASK) < HALF


def le(a: int, b: int) -> bool:
    """a <= b modulo 2**32."""
    return ((b - a) & MASK) < HALF


def gt(a: int, b: int) -> bool:
    """a > b modulo 2**32."""
    return 0 < ((a - b) & MASK) < HALF


def ge(a: int, b: int) -> bool:
    """a >= b modulo 2**32."""
    return ((a - b) & MASK) < HALF


def in_window(x: int, left: int, size: int) -> bool:
    """left <= x < left + size modulo 2**32."""
    return ((x - left) & MASK) < size


def max_seq(a: int, b: int) -> int:
    return a if ge(a, b) else b
