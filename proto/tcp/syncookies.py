"""SYN cookies (RFC 4987 3.6; Linux's net/ipv4/syncookies.c and tcp_syncookies).

When a listener's half-open queue is full (`tcp.syncookies` = 1, the default,
as Linux) or always (2), a SYN is answered with a SYN+ACK whose initial
sequence number is a cookie, and nothing is kept.  The handshake's final ACK
brings the cookie back (ACK - 1); if it checks, the connection is made from
what the cookie says.  0 turns cookies off (the SYN is dropped, as before).

The cookie, 32 bits:

    | 25-bit keyed hash                        | wscale (4) | sack (1) | mss (2) |

- mss: an index into MSS_TABLE, Linux's msstab_ipv4 (the largest entry not
  above the peer's MSS; 536 for anything smaller, as Linux).
- wscale: the peer's window scale (0..14), or 15 when it offered none.
- sack: the peer offered SACK-permitted.
- the hash: blake2s keyed with the engine's secret over the four-tuple, the
  peer's ISN (the returning ACK's SEQ - 1), a coarse clock (COOKIE_PERIOD = 64 s
  ticks, as Linux's 60 s counter) and the seven data bits.

Why the data bits lie in clear at the bottom and not in the timestamp as
Linux's: we do not offer timestamps yet, and a peer that offered none has no
other field that comes back.  Linux without timestamps keeps only the MSS (2
bits) and loses window scaling and SACK; seven clear bits bound by the keyed
hash keep all three.  An attacker who changes them changes the hash input, so
a forgery still needs the 25-bit hash right (Linux's cookie checks 24).  The
clock is not in the cookie: the check tries the current tick and the
MAX_AGE_TICKS before it, so a cookie is good for 2-3 minutes (Linux:
MAX_SYNCOOKIE_AGE = 2 ticks of 60 s) and the check costs at most three hashes.
Cookies are deterministic per (tuple, peer ISN, tick): a retransmitted SYN gets
the same cookie, so either SYN+ACK completes the handshake.

Our own window scale is not in the cookie: it follows from the listener's
buffer settings (rcvbuf.choose_wscale), recomputed when the ACK arrives, as
Linux recomputes it from the listener.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

MSS_TABLE = (536, 1300, 1440, 1460)      # Linux msstab[] for IPv4
COOKIE_PERIOD = 64.0                     # seconds per clock tick
MAX_AGE_TICKS = 2                        # a cookie from this many ticks ago still checks
NO_WSCALE = 15
DATA_BITS = 7
DATA_MASK = (1 << DATA_BITS) - 1
HASH_MASK = (1 << (32 - DATA_BITS)) - 1

OFF, WHEN_FULL, ALWAYS = 0, 1, 2


@dataclass(frozen=True, slots=True)
class CookieOptions:
    """What a valid cookie says of the peer's SYN."""
    mss: int
    window_scale: int | None
    sack_permitted: bool


def mss_index(peer_mss: int | None) -> int:
    """Linux cookie_v4_init_sequence: the largest table entry not above the peer's MSS (0 at worst)."""
    mss = peer_mss if peer_mss else 536
    for index in range(len(MSS_TABLE) - 1, 0, -1):
        if mss >= MSS_TABLE[index]:
            return index
    return 0


def encode_data(peer_mss: int | None, window_scale: int | None, sack_permitted: bool) -> int:
    ws = NO_WSCALE if window_scale is None else min(window_scale, 14)
    return (ws << 3) | (int(bool(sack_permitted)) << 2) | mss_index(peer_mss)


def decode_data(data: int) -> CookieOptions:
    ws = (data >> 3) & 0xF
    return CookieOptions(MSS_TABLE[data & 3], None if ws == NO_WSCALE else ws, bool(data & 4))


def _hash(key: bytes, tuple4: tuple, peer_isn: int, tick: int, data: int) -> int:
    local_addr, local_port, remote_addr, remote_port = tuple4
    msg = f"{local_addr}:{local_port}<{remote_addr}:{remote_port}/{peer_isn}/{tick}/{data}".encode()
    return int.from_bytes(hashlib.blake2s(msg, key=key, digest_size=4).digest(), "big") & HASH_MASK


def tick_of(now: float) -> int:
    return int(now // COOKIE_PERIOD)


def make(key: bytes, now: float, tuple4: tuple, peer_isn: int, peer_mss: int | None,
         window_scale: int | None, sack_permitted: bool) -> int:
    """The cookie (our ISS) for a SYN from the peer; tuple4 = (local addr, port, remote addr, port)."""
    data = encode_data(peer_mss, window_scale, sack_permitted)
    return (_hash(key, tuple4, peer_isn, tick_of(now), data) << DATA_BITS) | data


def check(key: bytes, now: float, tuple4: tuple, peer_isn: int, cookie: int) -> CookieOptions | None:
    """What the cookie says, or None: forged, for another tuple or ISN, or older than MAX_AGE_TICKS."""
    data = cookie & DATA_MASK
    want = cookie >> DATA_BITS
    tick = tick_of(now)
    for age in range(MAX_AGE_TICKS + 1):
        if _hash(key, tuple4, peer_isn, tick - age, data) == want:
            return decode_data(data)
    return None
