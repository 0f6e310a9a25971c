"""IPv4 fragmentation (output) and reassembly (input), RFC 791 section 3.2 and
RFC 815, with the limits Linux puts on reassembly (net/ipv4/ip_fragment.c,
net/ipv4/inet_fragment.c).

Reassembly
----------
Fragments are queued by (src, dst, protocol, ident) (RFC 791 section 3.2,
"Reassembly").  A queue lives `timeout` seconds from its first fragment (RFC
1122 section 3.3.2 recommends 60 to 120 s; Linux's ipfrag_time is 30 s); the
timer is not restarted by later fragments.  The rules, as Linux applies them
since 2018 (commit 7969e5c40dfd, "ip: discard IPv4 datagrams with overlapping
segments", and `inet_frag_queue_insert`):

* A fragment that overlaps data already queued, without lying wholly inside
  it, makes the whole datagram be discarded ("drop_reasm_overlap").  RFC 5722
  section 4 asks this of IPv6; Linux does it for IPv4 too, since overlaps
  serve only to evade filters.
* A fragment that lies wholly inside data already queued is a duplicate (a
  retransmission, or a copy the network made): it alone is dropped and the
  queue kept ("drop_reasm_duplicate").  Linux tests containment in one "run"
  of fragments that arrived in order; this code tests containment in any
  stretch of contiguous queued data, which differs only for fragments that
  both repeat data and span pieces that arrived out of order.
* A fragment that contradicts the datagram's length (a last fragment that ends
  before data already queued, two different ends, data beyond a known end) or
  carries no data discards the datagram ("drop_reasm_malformed").
* Non-last fragments are cut to a multiple of 8 bytes, as their offsets must be.
* A datagram whose reassembled size would exceed 65535 bytes is discarded
  ("drop_reasm_oversize"), as soon as a fragment shows it.
* The fragments held are capped at `max_bytes` (counted as the header and data
  bytes of each fragment); above it the oldest queues are evicted
  ("drop_reasm_memory"), like the old Linux `ip_evictor`.
* A queue that times out is discarded ("drop_reasm_timeout"); if it held the
  first fragment, the caller should send ICMP Time Exceeded, code 1 (RFC 792,
  RFC 1122 section 3.3.2), quoting that fragment, as Linux's `ip_expire` does.

Counters follow RFC 4293 (ipSystemStatsReasmReqds: fragments received;
ReasmOKs: datagrams reassembled; ReasmFails: datagrams given up).

Fragmentation
-------------
`fragment` splits a datagram into fragments whose data are multiples of 8
bytes (RFC 791 section 3.2, "Fragmentation"), copying into every fragment only
the options whose "copied" flag is set (RFC 791 section 3.1, "Options").
"""
from __future__ import annotations

import bisect
import collections
import dataclasses
from dataclasses import dataclass, field

from proto.wire.ipv4 import (
    FRAGMENT_UNIT, MAX_TOTAL_LENGTH, MIN_HEADER_LENGTH, Ipv4Flags, Ipv4Header,
    build_ipv4, build_ipv4_header,
)

DEFAULT_REASSEMBLY_TIMEOUT = 30.0               # Linux net.ipv4.ipfrag_time
DEFAULT_REASSEMBLY_MAX_BYTES = 4 * 1024 * 1024  # Linux net.ipv4.ipfrag_high_thresh

REASSEMBLY_COUNTERS = (
    "reasm_reqds", "reasm_oks", "reasm_fails",
    "drop_reasm_overlap", "drop_reasm_duplicate", "drop_reasm_malformed",
    "drop_reasm_timeout", "drop_reasm_memory", "drop_reasm_oversize",
)

FragmentKey = tuple[bytes, bytes, int, int]     # (src, dst, protocol, ident)


@dataclass(frozen=True, slots=True)
class TimedOutDatagram:
    """A datagram whose reassembly timed out after its first fragment came.

    `quote` is that fragment's IP header and first 8 data bytes, ready for an
    ICMP Time Exceeded (code 1).
    """
    header: Ipv4Header
    quote: bytes


@dataclass(slots=True)
class FragmentQueue:
    """The fragments of one datagram received so far.

    The queued pieces never overlap, so `starts`, `ends` and `pieces` (parallel
    lists) are sorted by start and by end alike.
    """
    deadline: float
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    pieces: list[bytes] = field(default_factory=list)
    received: int = 0               # data bytes queued (Linux: "meat")
    length: int = 0                 # the datagram's data length, as far as known
    last_seen: bool = False         # the fragment with MF clear has come
    first_header: Ipv4Header | None = None  # header of the fragment at offset 0
    first_quote: bytes = b""
    memory: int = 0                 # bytes charged to the memory cap

    @property
    def complete(self) -> bool:
        return self.first_header is not None and self.last_seen and self.received == self.length


_INSERTED, _DUPLICATE, _OVERLAP = "inserted", "duplicate", "overlap"


def _insert(queue: FragmentQueue, start: int, end: int, data: bytes) -> str:
    """Queue data for [start, end), or say why not (Linux `inet_frag_queue_insert`)."""
    ends = queue.ends
    index = bisect.bisect_right(ends, start)        # first piece ending after `start`
    starts = queue.starts
    if index == len(ends) or starts[index] >= end:
        starts.insert(index, start)
        ends.insert(index, end)
        queue.pieces.insert(index, data)
        queue.received += end - start
        return _INSERTED
    # It touches queued data: a duplicate only if contiguous data covers it all.
    if starts[index] > start:
        return _OVERLAP
    covered_to = ends[index]
    index += 1
    while covered_to < end and index < len(ends) and starts[index] == covered_to:
        covered_to = ends[index]
        index += 1
    return _DUPLICATE if covered_to >= end else _OVERLAP


class Reassembler:
    """The reassembly queues of one host (RFC 791 section 3.2, RFC 815).

    Plain data and no clock: `add` and `expire` take `now` (seconds, never
    going backwards).  `counters` may be shared with the caller; the names in
    `REASSEMBLY_COUNTERS` are added to it at zero.
    """

    def __init__(self, timeout: float = DEFAULT_REASSEMBLY_TIMEOUT,
                 max_bytes: int = DEFAULT_REASSEMBLY_MAX_BYTES,
                 counters: dict[str, int] | None = None):
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.counters = counters if counters is not None else {}
        for name in REASSEMBLY_COUNTERS:
            self.counters.setdefault(name, 0)
        # Oldest first: insertion order is creation order, hence deadline order.
        self.queues: collections.OrderedDict[FragmentKey, FragmentQueue] = collections.OrderedDict()
        self.memory = 0

    def add(self, now: float, header: Ipv4Header,
            payload: bytes | memoryview) -> tuple[Ipv4Header, bytes] | None:
        """Queue one fragment; return the whole datagram when it completes.

        `header` must describe a fragment (`header.is_fragment`) whose checks
        (checksum, lengths, destination) have passed.  The datagram returned
        has the first fragment's header with MF and offset cleared and Total
        Length set; its payload is the reassembled data.
        """
        counters = self.counters
        counters["reasm_reqds"] += 1
        key = (header.src, header.dst, header.protocol, header.ident)
        start = header.frag_offset
        end = start + len(payload)
        more_fragments = bool(header.flags & Ipv4Flags.MF)
        if more_fragments:
            end &= ~(FRAGMENT_UNIT - 1)     # RFC 791: every fragment but the last is 8-byte units

        if header.header_length + end > MAX_TOTAL_LENGTH:
            self._discard(key, "drop_reasm_oversize")
            return None

        queue = self.queues.get(key)
        if queue is None:
            queue = FragmentQueue(deadline=now + self.timeout)
            self.queues[key] = queue

        # The datagram's length must stay consistent (Linux `ip_frag_queue`).
        if not more_fragments:
            if end < queue.length or (queue.last_seen and end != queue.length):
                self._discard(key, "drop_reasm_malformed")
                return None
            queue.last_seen = True
            queue.length = end
        elif end > queue.length:
            if queue.last_seen:
                self._discard(key, "drop_reasm_malformed")
                return None
            queue.length = end
        if end == start:
            self._discard(key, "drop_reasm_malformed")
            return None

        verdict = _insert(queue, start, end, bytes(payload[:end - start]))
        if verdict is _DUPLICATE:
            counters["drop_reasm_duplicate"] += 1
            return None
        if verdict is _OVERLAP:
            self._discard(key, "drop_reasm_overlap")
            return None

        charge = header.header_length + (end - start)
        queue.memory += charge
        self.memory += charge
        if start == 0:
            queue.first_header = header
            queue.first_quote = build_ipv4_header(header) + bytes(payload[:8])

        if queue.complete:
            return self._reassemble(key, queue)
        if self.memory > self.max_bytes:
            self._evict()
        return None

    def expire(self, now: float) -> list[TimedOutDatagram]:
        """Discard the queues whose time is up; list those that had their first fragment."""
        timed_out = []
        queues = self.queues
        while queues:
            key, queue = next(iter(queues.items()))
            if queue.deadline > now:
                break
            self._discard(key, "drop_reasm_timeout")
            if queue.first_header is not None:
                timed_out.append(TimedOutDatagram(queue.first_header, queue.first_quote))
        return timed_out

    def next_deadline(self) -> float | None:
        """When `expire` next has work to do, or None if nothing is queued."""
        if not self.queues:
            return None
        return next(iter(self.queues.values())).deadline

    def _reassemble(self, key: FragmentKey, queue: FragmentQueue) -> tuple[Ipv4Header, bytes] | None:
        del self.queues[key]
        self.memory -= queue.memory
        first = queue.first_header
        assert first is not None
        total_length = first.header_length + queue.length
        if total_length > MAX_TOTAL_LENGTH:     # a long-options first fragment came last
            self.counters["drop_reasm_oversize"] += 1
            self.counters["reasm_fails"] += 1
            return None
        header = dataclasses.replace(first, total_length=total_length,
                                     flags=first.flags & ~Ipv4Flags.MF, frag_offset=0)
        raw = build_ipv4_header(header)
        header = dataclasses.replace(header, checksum=int.from_bytes(raw[10:12], "big"))
        self.counters["reasm_oks"] += 1
        return header, b"".join(queue.pieces)

    def _discard(self, key: FragmentKey, reason: str) -> None:
        """Give up a datagram (if queued) and count why (RFC 4293 ReasmFails)."""
        queue = self.queues.pop(key, None)
        if queue is not None:
            self.memory -= queue.memory
        self.counters[reason] += 1
        self.counters["reasm_fails"] += 1

    def _evict(self) -> None:
        """Evict the oldest queues until the fragments held fit `max_bytes`."""
        while self.memory > self.max_bytes and self.queues:
            self._discard(next(iter(self.queues)), "drop_reasm_memory")


class FragmentationNeeded(ValueError):
    """A datagram with DF set is larger than the MTU (RFC 791 section 3.2)."""


def _copied_options(options: bytes) -> bytes:
    """The options that go into every fragment: those with the "copied" flag
    (bit 0x80 of the type, RFC 791 section 3.1), padded to 4 bytes."""
    copied = bytearray()
    index = 0
    while index < len(options):
        option_type = options[index]
        if option_type == 0:                # End of Option List
            break
        if option_type == 1:                # No Operation
            index += 1
            continue
        if index + 1 >= len(options):
            break
        option_length = options[index + 1]
        if option_length < 2:
            break                           # malformed: stop rather than loop
        if option_type & 0x80:
            copied += options[index:index + option_length]
        index += option_length
    copied += b"\0" * (-len(copied) % 4)
    return bytes(copied)


def fragment(header: Ipv4Header, payload: bytes | memoryview, mtu: int) -> list[bytes]:
    """Split one datagram into packets of at most `mtu` bytes (RFC 791 section 3.2).

    `header` gives src, dst, protocol, ident, ttl, tos and options; its length,
    checksum, and DF are used as they are; if it is itself a fragment (MF set or
    an offset), the pieces keep its place in the original datagram.  A datagram
    that fits is returned whole; one that does not with DF set raises
    `FragmentationNeeded` (the caller counts and drops it).
    """
    options = header.options
    first_header_length = MIN_HEADER_LENGTH + len(options)
    if first_header_length + len(payload) <= mtu:
        return [build_ipv4(header.src, header.dst, header.protocol, payload, ttl=header.ttl,
                           ident=header.ident, df=header.dont_fragment, mf=header.more_fragments,
                           frag_offset=header.frag_offset, tos=header.tos, options=options)]
    if header.dont_fragment:
        raise FragmentationNeeded(f"{first_header_length + len(payload)} bytes with DF, MTU {mtu}")
    later_options = _copied_options(options)
    packets = []
    position = 0
    header_options = options
    while position < len(payload):
        room = mtu - MIN_HEADER_LENGTH - len(header_options)
        chunk = room & ~(FRAGMENT_UNIT - 1)
        if chunk <= 0:
            raise ValueError(f"MTU {mtu} leaves no room for fragment data")
        last = position + chunk >= len(payload)
        if last:
            chunk = len(payload) - position
        packets.append(build_ipv4(
            header.src, header.dst, header.protocol, payload[position:position + chunk],
            ttl=header.ttl, ident=header.ident, df=False,
            mf=header.more_fragments or not last,
            frag_offset=header.frag_offset + position, tos=header.tos, options=header_options))
        position += chunk
        header_options = later_options
    return packets
