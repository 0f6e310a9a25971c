"""The IP layer of a host, pure: IPv4 input and output, ICMP echo and errors.

This is the core of ipd (the service is a loop around it).  Input follows
Linux's `ip_rcv` / `ip_local_deliver` and RFC 1122 section 3.2.1; output its
`ip_queue_xmit` / `ip_fragment`.  Nothing a peer sends raises out of
`packet_in`: every bad packet is counted under a stable name and dropped.

The common case, an unfragmented TCP segment for us with a 20-byte header,
takes a fast path that checks the header with a few integer operations and
hands on a zero-copy view of the segment; everything else goes through the
full parse (`parse_ipv4`).

The caller passes `now` (seconds, monotonic) and an `IpOutput` to collect what
the call produced: packets for the device, segments for TCP.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from proto.ip.fragment import REASSEMBLY_COUNTERS, Reassembler, fragment
from proto.wire.checksum import ones_complement_sum
from proto.wire.icmp import (
    IcmpParseError, IcmpType, TimeExceededCode, UnreachableCode, build_dest_unreachable,
    build_echo_reply, build_time_exceeded, is_error_type, parse_icmp, parse_quoted_datagram,
)
from proto.wire.ipv4 import (
    MAX_TOTAL_LENGTH, MIN_HEADER_LENGTH, PROTO_ICMP, PROTO_TCP, PROTO_UDP, Ipv4Flags, Ipv4Header,
    Ipv4ParseError, build_ipv4, build_ipv4_header, is_unicast_source, parse_ipv4,
)

MIN_MTU = 68                    # RFC 791 section 3.2: every host link carries 68 bytes
ICMP_ERROR_BURST = 50           # like Linux's net.ipv4.icmp_msgs_burst

# Every counter, in the order `stats` shows them (RFC 4293's ipSystemStats names
# where one exists):
#   in_receives, in_bytes   every packet handed to packet_in (IPv6 included), and its bytes
#   in_delivers             datagrams given to TCP or consumed by ICMP (InDelivers)
#   out_requests            datagrams we originate: send() calls, echo replies, ICMP errors
#   out_packets, out_bytes  packets put in IpOutput.to_device, fragments counted one by one
#   echo_requests, echo_replies   ICMP echo served (RFC 1122 section 3.2.2.6)
#   icmp_ignored            well-formed ICMP other than echo requests (replies, errors, ...)
#   icmp_errors_sent        protocol unreachable and reassembly time exceeded sent
#   reasm_reqds, reasm_oks, reasm_fails   fragments in, datagrams rebuilt, datagrams given up
#   frag_oks, frag_creates  datagrams fragmented on output, fragments made
#   drop_<reason>           a packet (or a datagram being reassembled) dropped, and why
#   not_ipv4                IPv6 packets (the kernel's router solicitations), ignored
#   icmp_ratelimited        ICMP errors the token bucket held back
COUNTER_NAMES = (
    "in_receives", "in_bytes", "in_delivers",
    "out_requests", "out_packets", "out_bytes",
    "echo_requests", "echo_replies", "icmp_ignored", "icmp_errors_sent",
    *REASSEMBLY_COUNTERS[:3],   # reasm_reqds, reasm_oks, reasm_fails
    "frag_oks", "frag_creates",
    "drop_truncated", "drop_bad_version", "drop_bad_header_length", "drop_bad_total_length",
    "drop_bad_checksum", "drop_not_for_us", "drop_bad_source",
    *REASSEMBLY_COUNTERS[3:],   # drop_reasm_*
    "drop_frag_needed_df", "drop_icmp_malformed", "drop_unknown_protocol",
    "not_ipv4", "icmp_ratelimited", "loopback_packets", "drop_loopback_protocol",
    "udp_icmp_errors", "drop_bad_unreachable_quote",
)


@dataclass
class IpConfig:
    address: bytes                  # our 4-byte address
    mtu: int = 1500
    tso: bool = False       # the device segments TCP (TSO): TCP datagrams up to 64 KiB go out whole
    ttl: int = 64
    reassembly_timeout: float = 30.0
    reassembly_max_bytes: int = 4 * 1024 * 1024
    icmp_error_rate: float = 100.0  # ICMP errors per second (token bucket, burst 50), like net.ipv4.icmp_ratelimit
    broadcasts: tuple = ()          # broadcast addresses UDP datagrams may come to (255.255.255.255, the subnet's)

    def __post_init__(self) -> None:
        if len(self.address) != 4:
            raise ValueError("address must be 4 bytes")
        if not MIN_MTU <= self.mtu <= MAX_TOTAL_LENGTH:
            raise ValueError(f"mtu must be {MIN_MTU}..{MAX_TOTAL_LENGTH}")
        if not 1 <= self.ttl <= 255:
            raise ValueError("ttl must be 1..255 (RFC 1122 section 3.2.1.7: never send TTL 0)")
        if self.reassembly_timeout <= 0 or self.reassembly_max_bytes <= 0 or self.icmp_error_rate < 0:
            raise ValueError("reassembly limits must be positive and the ICMP rate not negative")


@dataclass
class IpOutput:
    """What one call produced."""
    to_device: list[bytes] = field(default_factory=list)                               # whole IP packets for nicd
    to_tcp: list[tuple[bytes, bytes, bytes | memoryview]] = field(default_factory=list)  # (src, dst, segment) for tcpd
    looped: list[int] = field(default_factory=list)     # which of to_tcp came back by loopback (never on a wire)
    # UDP: (src, dst, IP header as received or b"" when looped, datagram) for udpd; which came back by
    # loopback; ICMP errors about UDP datagrams we sent, (type, code, quote) for udpd
    to_udp: list = field(default_factory=list)
    udp_looped: list[int] = field(default_factory=list)
    udp_errors: list = field(default_factory=list)


@dataclass
class TokenBucket:
    """`rate` tokens a second, at most `burst` saved; one token per message sent."""
    rate: float
    burst: float
    tokens: float
    last_refill: float | None = None

    def take(self, now: float) -> bool:
        if self.last_refill is not None and now > self.last_refill:
            self.tokens = min(self.burst, self.tokens + (now - self.last_refill) * self.rate)
        if self.last_refill is None or now > self.last_refill:
            self.last_refill = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class IpLayer:
    """IPv4 for one interface with one address (a host, not a router).

    `counters` holds every counter, zero-initialised, under the names in
    `COUNTER_NAMES`; drops are named "drop_<reason>".
    """

    def __init__(self, config: IpConfig):
        self.config = config
        self.address = bytes(config.address)
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        self.reassembler = Reassembler(config.reassembly_timeout, config.reassembly_max_bytes,
                                       self.counters)
        self.icmp_error_bucket = TokenBucket(config.icmp_error_rate, ICMP_ERROR_BURST,
                                             ICMP_ERROR_BURST)
        self.next_ident = 0

    # ---- input ---------------------------------------------------------------

    def packet_in(self, now: float, packet: bytes | memoryview, out: IpOutput) -> None:
        """One packet from the device (RFC 1122 section 3.2.1; Linux `ip_rcv`).

        `packet` is bytes or a read-only byte memoryview (a ZeroMQ frame): the
        segment handed to TCP is a view of it, not a copy.  Anything mutable is
        copied first, since TCP may hold the view.
        """
        if type(packet) is not bytes and not (
                type(packet) is memoryview and packet.readonly and packet.format == "B"
                and packet.ndim == 1):
            packet = bytes(packet)
        counters = self.counters
        counters["in_receives"] += 1
        length = len(packet)
        counters["in_bytes"] += length
        # Fast path: version 4, no options, not a fragment, TCP, for us,
        # total length within the packet, a plausible source, checksum good.
        if length >= MIN_HEADER_LENGTH and packet[0] == 0x45 and packet[9] == PROTO_TCP:
            total_length = (packet[2] << 8) | packet[3]
            if (MIN_HEADER_LENGTH <= total_length <= length
                    and not (packet[6] & 0x3F or packet[7])     # MF clear, offset 0
                    and packet[16:20] == self.address
                    and 0 < packet[12] < 224 and packet[12] != 127
                    and ones_complement_sum(packet[:MIN_HEADER_LENGTH]) == 0xFFFF):
                src = bytes(packet[12:16])
                if src != self.address:
                    counters["in_delivers"] += 1
                    out.to_tcp.append((src, self.address,
                                       memoryview(packet)[MIN_HEADER_LENGTH:total_length]))
                    return
        self._packet_in_slow(now, packet, out)

    def _packet_in_slow(self, now: float, packet: bytes, out: IpOutput) -> None:
        counters = self.counters
        if packet and packet[0] >> 4 == 6:
            counters["not_ipv4"] += 1       # IPv6 (router solicitations): not ours to judge
            return
        try:
            header, payload = parse_ipv4(packet)
        except Ipv4ParseError as error:
            counters["drop_" + error.reason] += 1
            return
        # Any TTL, 0 and 1 included: RFC 1122 section 3.2.1.7, a host MUST NOT discard a datagram
        # addressed to it because of its TTL (Linux and gVisor deliver it; only forwarding checks it).
        if header.dst != self.address and not (header.protocol == PROTO_UDP and header.dst in self.config.broadcasts):
            counters["drop_not_for_us"] += 1  # also broadcast and multicast: we join no group
            return
        if not is_unicast_source(header.src) or header.src == self.address:
            counters["drop_bad_source"] += 1  # RFC 1122 section 3.2.1.3; our own address: Linux's martian
            return
        if header.is_fragment:
            deadline = self.reassembler.next_deadline()
            if deadline is not None and deadline <= now:
                self.expire(now, out)
            datagram = self.reassembler.add(now, header, payload)
            if datagram is None:
                return
            header, payload = datagram
            raw_header = None
        else:
            raw_header = bytes(packet[:header.header_length])
        self._deliver(now, header, payload, out, raw_header)

    def _deliver(self, now: float, header: Ipv4Header, payload: bytes | memoryview,
                 out: IpOutput, raw_header: bytes | None = None) -> None:
        """Hand a whole datagram to its protocol (Linux `ip_local_deliver_finish`)."""
        protocol = header.protocol
        if protocol == PROTO_TCP:
            self.counters["in_delivers"] += 1
            out.to_tcp.append((header.src, header.dst, payload))
        elif protocol == PROTO_UDP:
            self.counters["in_delivers"] += 1
            out.to_udp.append((header.src, header.dst, raw_header or build_ipv4_header(header), payload))
        elif protocol == PROTO_ICMP:
            self._icmp_in(now, header, payload, out)
        else:
            # RFC 1122 section 3.2.2.1: SHOULD send Protocol Unreachable.
            self.counters["drop_unknown_protocol"] += 1
            self._send_icmp_error(now, header, build_ipv4_header(header) + bytes(payload[:8]),
                                  IcmpType.DEST_UNREACHABLE, UnreachableCode.PROTOCOL, out)

    def _icmp_in(self, now: float, header: Ipv4Header, payload: bytes | memoryview,
                 out: IpOutput) -> None:
        """ICMP for us: answer echo requests (RFC 1122 section 3.2.2.6), count the rest."""
        counters = self.counters
        try:
            message = parse_icmp(payload)
        except IcmpParseError:
            counters["drop_icmp_malformed"] += 1
            return
        counters["in_delivers"] += 1
        if message.type == IcmpType.ECHO_REQUEST:
            counters["echo_requests"] += 1
            reply = build_echo_reply(message.identifier, message.sequence, message.body)
            # A reply to a large (reassembled) request may itself need fragmenting.
            if self._output(now, self.address, header.src, PROTO_ICMP, reply, out, df=False):
                counters["echo_replies"] += 1
        elif message.is_error and _quotes_protocol(message.body, PROTO_UDP):
            # an error about a datagram UDP sent goes to UDP (RFC 1122 section 3.2.2, 4.1.3.3)
            counters["udp_icmp_errors"] += 1
            out.udp_errors.append((message.type, message.code, message.body))
        else:
            # Errors about TCP would go to the transport layer (RFC 1122 section 3.2.2); this
            # IpOutput has no path for them yet, so they are counted and dropped.
            counters["icmp_ignored"] += 1

    def port_unreachable(self, now: float, quote: bytes, out: IpOutput) -> None:
        """UDP found no socket for a datagram (quote: its IP header and first 8 bytes): ICMP
        port unreachable to its source, under the rules and rate limit of every ICMP error."""
        try:
            quoted = parse_quoted_datagram(quote)
        except IcmpParseError:
            self.counters["drop_bad_unreachable_quote"] += 1
            return
        offset = ((quote[6] << 8 | quote[7]) & 0x1FFF) * 8
        header = Ipv4Header(tos=0, total_length=0, ident=0, flags=Ipv4Flags(0), frag_offset=offset, ttl=0,
                            protocol=quoted.protocol, checksum=0, src=quoted.src, dst=quoted.dst)
        self._send_icmp_error(now, header, quote, IcmpType.DEST_UNREACHABLE, UnreachableCode.PORT, out)

    # ---- ICMP errors -----------------------------------------------------------

    def _send_icmp_error(self, now: float, header: Ipv4Header, quote: bytes,
                         icmp_type: int, code: int, out: IpOutput) -> None:
        """Send an ICMP error about a datagram, if the rules allow one.

        RFC 1122 section 3.2.2: never about an ICMP error, nor about a fragment
        other than the first, nor to a source that is not one host; and rate
        limited (section 3.2.2, and Linux's `icmp_global_allow`).  `quote` is the
        offending datagram's header and first 8 payload bytes.
        """
        if header.frag_offset != 0 or not is_unicast_source(header.src):
            return
        if header.protocol == PROTO_ICMP:
            transport_head = quote[header.header_length:]
            if not transport_head or is_error_type(transport_head[0]):
                return
        if not self.icmp_error_bucket.take(now):
            self.counters["icmp_ratelimited"] += 1
            return
        if icmp_type == IcmpType.TIME_EXCEEDED:
            message = build_time_exceeded(code, quote)
        else:
            message = build_dest_unreachable(code, quote)
        if self._output(now, self.address, header.src, PROTO_ICMP, message, out, df=False):
            self.counters["icmp_errors_sent"] += 1

    # ---- output --------------------------------------------------------------

    def send(self, now: float, src: bytes, dst: bytes, protocol: int, payload: bytes,
             out: IpOutput, df: bool = True) -> None:
        """Send one datagram from a transport protocol (Linux `ip_queue_xmit`).

        DF is set by default (path MTU discovery, RFC 1191); a datagram larger
        than the MTU is then dropped ("drop_frag_needed_df"), otherwise it is
        fragmented.  A payload too large for any datagram raises `ValueError`.
        """
        self._output(now, src, dst, protocol, payload, out, df)

    def _output(self, now: float, src: bytes, dst: bytes, protocol: int,
                payload: bytes | memoryview, out: IpOutput, df: bool) -> bool:
        counters = self.counters
        if MIN_HEADER_LENGTH + len(payload) > MAX_TOTAL_LENGTH:
            raise ValueError(f"payload of {len(payload)} bytes does not fit in an IPv4 datagram")
        counters["out_requests"] += 1
        if dst == self.address or dst[0] == 127:
            return self._loop_back(src, dst, protocol, payload, out)
        ident = self.next_ident
        self.next_ident = (ident + 1) & 0xFFFF
        config = self.config
        if MIN_HEADER_LENGTH + len(payload) <= config.mtu or (config.tso and protocol == PROTO_TCP):
            packet = build_ipv4(src, dst, protocol, payload, ttl=config.ttl, ident=ident, df=df)
            out.to_device.append(packet)
            counters["out_packets"] += 1
            counters["out_bytes"] += len(packet)
            return True
        if df:
            counters["drop_frag_needed_df"] += 1
            return False
        header = Ipv4Header(tos=0, total_length=0, ident=ident, flags=Ipv4Flags(0), frag_offset=0,
                            ttl=config.ttl, protocol=protocol, checksum=0, src=src, dst=dst)
        packets = fragment(header, payload, config.mtu)
        counters["frag_oks"] += 1
        counters["frag_creates"] += len(packets)
        counters["out_packets"] += len(packets)
        for packet in packets:
            counters["out_bytes"] += len(packet)
        out.to_device.extend(packets)
        return True

    def _loop_back(self, src: bytes, dst: bytes, protocol: int, payload: bytes | memoryview,
                   out: IpOutput) -> bool:
        """To our own address or 127.0.0.0/8: back in at once, as through Linux's loopback
        device (no MTU to fit, no checksum to check: the bytes never left memory)."""
        if protocol == PROTO_UDP:
            self.counters["loopback_packets"] += 1
            out.udp_looped.append(len(out.to_udp))
            out.to_udp.append((src, dst, b"", payload))
            return True
        if protocol != PROTO_TCP:
            self.counters["drop_loopback_protocol"] += 1     # only TCP and UDP are sent to ourselves
            return False
        self.counters["loopback_packets"] += 1
        out.looped.append(len(out.to_tcp))
        out.to_tcp.append((src, dst, payload))
        return True

    # ---- timers --------------------------------------------------------------

    def expire(self, now: float, out: IpOutput) -> None:
        """Give up reassemblies whose time is up (RFC 1122 section 3.3.2); send
        Time Exceeded (code 1) for those whose first fragment came (Linux `ip_expire`)."""
        for timed_out in self.reassembler.expire(now):
            self._send_icmp_error(now, timed_out.header, timed_out.quote,
                                  IcmpType.TIME_EXCEEDED, TimeExceededCode.REASSEMBLY, out)

    def next_deadline(self) -> float | None:
        """When `expire` should next be called, or None."""
        return self.reassembler.next_deadline()


def _quotes_protocol(body: bytes, protocol: int) -> bool:
    """Whether an ICMP error's body quotes a datagram of `protocol`."""
    try:
        return parse_quoted_datagram(body).protocol == protocol
    except IcmpParseError:
        return False
