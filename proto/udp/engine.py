"""UDP, pure: the port table, datagram demultiplexing, receive queues, ICMP errors.

The core of udpd.  RFC 768, RFC 1122 section 4.1 and, where the RFCs leave room,
Linux's net/ipv4/udp.c: the socket lookup scores an exact four-tuple above a
bound address above a wildcard (`compute_score`), a full receive buffer drops
and counts (`RcvbufErrors`), an ICMP error about a datagram a connected socket
sent becomes that socket's pending error (`__udp4_lib_err`), reported once by
its next send or receive.

Calls and packets go in; what to send, which ICMP errors to ask IP for and
which sockets to wake accumulate in `effects` (taken with `take_effects`).
No I/O, no clock: nothing here needs one (a blocked receive's timeout is the
shell's).  A user's bad call raises `UdpError` with Linux's errno; a peer's bad
datagram is counted and dropped.
"""
from __future__ import annotations

import errno
import random
from collections import deque
from dataclasses import dataclass, field

from proto.poll import POLLERR, POLLHUP, POLLIN, POLLOUT
from proto.wire.ipv4 import addr_to_str
from proto.wire.udp import MAX_PAYLOAD, UdpParseError, build_udp, parse_udp

SOL_SOCKET, IPPROTO_IP = 1, 0
SO_REUSEADDR, SO_TYPE, SO_ERROR, SO_BROADCAST, SO_SNDBUF, SO_RCVBUF, SO_REUSEPORT = 2, 3, 4, 6, 7, 8, 15
SOCK_DGRAM = 2
RMEM_MAX = WMEM_MAX = 212992          # net.core.rmem_max / wmem_max
MIN_RCVBUF, MIN_SNDBUF = 2304, 4608   # SOCK_MIN_RCVBUF / SOCK_MIN_SNDBUF
DATAGRAM_OVERHEAD = 768               # what a queued datagram costs beyond its bytes (Linux: skb truesize)
ANY = b"\0\0\0\0"
LOOPBACK = b"\x7f\0\0\1"

# ICMP destination unreachable codes -> errno, as Linux's icmp_err_convert
_UNREACHABLE_ERRNO = {0: errno.ENETUNREACH, 1: errno.EHOSTUNREACH, 2: errno.ENOPROTOOPT,
                      3: errno.ECONNREFUSED, 4: errno.EMSGSIZE, 5: errno.EOPNOTSUPP}
ICMP_DEST_UNREACHABLE, ICMP_PORT_UNREACHABLE = 3, 3

# counters (Linux's UDP MIB names, snake case), in the order `stats` shows them
COUNTER_NAMES = (
    "in_datagrams", "no_ports", "in_errors", "rcvbuf_errors", "in_csum_errors", "out_datagrams",
    "icmp_errors_in", "icmp_errors_unmatched", "drop_truncated", "drop_bad_length", "drop_broadcast_no_port",
)


class UdpError(Exception):
    def __init__(self, code: int):
        super().__init__(code, errno.errorcode.get(code, str(code)))
        self.errno = code


@dataclass
class UdpConfig:
    address: bytes                                   # the stack's own address
    prefix: int = 24                                 # its network's (for the directed broadcast)
    ephemeral_ports: tuple[int, int] = (32768, 60999)
    rcvbuf: int = RMEM_MAX                           # net.core.rmem_default
    sndbuf: int = WMEM_MAX

    @property
    def broadcast(self) -> bytes:
        host_bits = 32 - self.prefix
        value = int.from_bytes(self.address, "big") | ((1 << host_bits) - 1 if host_bits else 0)
        return value.to_bytes(4, "big")


@dataclass
class UdpSocket:
    sid: int
    local_addr: bytes = ANY
    local_port: int = 0
    peer_addr: bytes | None = None       # set when connected
    peer_port: int = 0
    addr_locked: bool = False            # bound by bind(), not implied by connect (SOCK_BINDADDR_LOCK)
    port_locked: bool = False            # SOCK_BINDPORT_LOCK
    reuse_addr: bool = False
    reuse_port: bool = False
    broadcast: bool = False
    rcvbuf: int = RMEM_MAX
    sndbuf: int = WMEM_MAX
    queue: deque = field(default_factory=deque)    # (src_addr, src_port, payload bytes)
    queued: int = 0                      # bytes charged against rcvbuf (payload + overhead each)
    error: int = 0                       # pending error (sk_err), reported once
    drops: int = 0                       # datagrams dropped for a full receive buffer
    bound_order: int = 0                 # later binds win ties (Linux adds to the head of the chain)

    def state(self) -> list:
        """What a restarted udpd needs to rebuild the socket (libsock keeps it, sends it back)."""
        return [self.local_addr, self.local_port, self.peer_addr, self.peer_port,
                int(self.addr_locked) | int(self.port_locked) << 1,
                [int(self.reuse_addr), int(self.reuse_port), int(self.broadcast), self.rcvbuf, self.sndbuf]]


@dataclass
class Effects:
    datagrams: list = field(default_factory=list)     # (src, dst, UDP datagram bytes) for ipd
    unreachable: list = field(default_factory=list)   # quotes (IP header + 8 bytes) for port unreachable
    woken: set = field(default_factory=set)           # sids whose receive may now succeed


def is_loopback(addr: bytes) -> bool:
    return addr[0] == 127


class UdpEngine:
    def __init__(self, config: UdpConfig, rng: random.Random | None = None):
        self.config = config
        self.address = bytes(config.address)
        self.broadcast_addr = config.broadcast
        self.rng = rng or random.Random()
        self.sockets: dict[int, UdpSocket] = {}
        self.ports: dict[int, list[UdpSocket]] = {}
        self.counters = dict.fromkeys(COUNTER_NAMES, 0)
        self.effects = Effects()
        self._binds = 0

    def take_effects(self) -> Effects:
        effects, self.effects = self.effects, Effects()
        return effects

    # ---- calls -----------------------------------------------------------------

    def _get(self, sid: int) -> UdpSocket:
        sock = self.sockets.get(sid)
        if sock is None:
            raise UdpError(errno.ESTALE)      # not ours (udpd restarted): the caller restores it
        return sock

    def open(self, sid: int, state: list | None = None) -> UdpSocket:
        """A new socket, or one rebuilt from `state` (UdpSocket.state) after a restart."""
        if sid in self.sockets:
            raise UdpError(errno.EEXIST)
        sock = UdpSocket(sid, rcvbuf=self.config.rcvbuf, sndbuf=self.config.sndbuf)
        if state:
            local_addr, local_port, peer_addr, peer_port, locks, opts = state
            sock.reuse_addr, sock.reuse_port, sock.broadcast = bool(opts[0]), bool(opts[1]), bool(opts[2])
            sock.rcvbuf, sock.sndbuf = int(opts[3]), int(opts[4])
            if local_port:
                self._check_local(bytes(local_addr))
                self._claim(sock, bytes(local_addr), local_port)
            sock.addr_locked, sock.port_locked = bool(locks & 1), bool(locks & 2)
            if peer_addr is not None:
                sock.peer_addr, sock.peer_port = bytes(peer_addr), peer_port
        self.sockets[sid] = sock
        return sock

    def _check_local(self, addr: bytes) -> None:
        if addr not in (ANY, self.address, self.broadcast_addr, b"\xff\xff\xff\xff") and not is_loopback(addr):
            raise UdpError(errno.EADDRNOTAVAIL)

    def _conflicts(self, sock: UdpSocket, addr: bytes, port: int) -> bool:
        for other in self.ports.get(port, ()):
            if other is sock:
                continue
            if other.local_addr != addr and ANY not in (other.local_addr, addr):
                continue
            if (sock.reuse_addr and other.reuse_addr) or (sock.reuse_port and other.reuse_port):
                continue
            return True
        return False

    def _claim(self, sock: UdpSocket, addr: bytes, port: int) -> None:
        """Bind sock to addr:port (port 0: an ephemeral one), or EADDRINUSE / EAGAIN."""
        if port == 0:
            low, high = self.config.ephemeral_ports
            span = high - low + 1
            start = self.rng.randrange(span)
            for i in range(span):
                candidate = low + (start + i) % span
                if not self._conflicts(sock, addr, candidate):
                    port = candidate
                    break
            else:
                raise UdpError(errno.EAGAIN)     # Linux: every ephemeral port taken
        elif self._conflicts(sock, addr, port):
            raise UdpError(errno.EADDRINUSE)
        sock.local_addr, sock.local_port = addr, port
        self._binds += 1
        sock.bound_order = self._binds
        self.ports.setdefault(port, []).append(sock)

    def _release(self, sock: UdpSocket) -> None:
        holders = self.ports.get(sock.local_port)
        if holders and sock in holders:
            holders.remove(sock)
            if not holders:
                del self.ports[sock.local_port]
        sock.local_port = 0

    def bind(self, sid: int, addr: bytes, port: int) -> list:
        sock = self._get(sid)
        if sock.local_port:
            raise UdpError(errno.EINVAL)
        self._check_local(addr)
        self._claim(sock, addr, port)
        sock.addr_locked = addr != ANY
        sock.port_locked = port != 0
        return sock.state()

    def _source_for(self, sock: UdpSocket, dst: bytes) -> bytes:
        """The source address towards dst: the bound one, or the route's (ip_route_connect)."""
        if sock.local_addr not in (ANY, self.broadcast_addr, b"\xff\xff\xff\xff"):
            if is_loopback(sock.local_addr) and not is_loopback(dst) and dst != self.address:
                raise UdpError(errno.EINVAL)        # a loopback source cannot leave the host
            return sock.local_addr
        return LOOPBACK if is_loopback(dst) else self.address

    def _check_destination(self, sock: UdpSocket, dst: bytes) -> bytes:
        if dst == ANY:
            return LOOPBACK                           # as Linux: 0.0.0.0 means this host
        if dst in (b"\xff\xff\xff\xff", self.broadcast_addr) and not sock.broadcast:
            raise UdpError(errno.EACCES)
        if dst[0] >= 224 and dst != b"\xff\xff\xff\xff":
            raise UdpError(errno.ENETUNREACH)         # no multicast route (we join no group)
        return dst

    def _autobind(self, sock: UdpSocket) -> None:
        if not sock.local_port:
            self._claim(sock, sock.local_addr, 0)

    def connect(self, sid: int, addr: bytes | None, port: int) -> list:
        """Connect (addr None: dissolve, as connect(AF_UNSPEC) does)."""
        sock = self._get(sid)
        if addr is None:
            sock.peer_addr, sock.peer_port = None, 0
            if not sock.addr_locked:
                sock.local_addr = ANY
            if not sock.port_locked and sock.local_port:
                self._release(sock)
            return sock.state()
        addr = self._check_destination(sock, addr)
        source = self._source_for(sock, addr)
        self._autobind(sock)
        if not sock.addr_locked:
            sock.local_addr = source    # the route's source becomes the bound address (ip4_datagram_connect)
        sock.peer_addr, sock.peer_port = addr, port
        sock.error = 0
        return sock.state()

    def sendto(self, sid: int, addr: bytes | None, port: int, data: bytes | memoryview,
               posted: bool = False) -> tuple[int, list | None]:
        """Send one datagram; (bytes sent, the socket's new state if it was bound just now).
        A posted send (nobody waits for its answer) leaves a pending error for the next call."""
        sock = self._get(sid)
        if sock.error and not posted:
            code, sock.error = sock.error, 0
            raise UdpError(code)
        if addr is None:
            if sock.peer_addr is None:
                raise UdpError(errno.EDESTADDRREQ)
            addr, port = sock.peer_addr, sock.peer_port
        else:
            addr = self._check_destination(sock, addr)
        if port == 0:
            raise UdpError(errno.EINVAL)
        if len(data) > MAX_PAYLOAD:
            raise UdpError(errno.EMSGSIZE)
        source = self._source_for(sock, addr)
        state = None
        if not sock.local_port:
            self._autobind(sock)
            state = sock.state()
        self.effects.datagrams.append((source, addr, build_udp(sock.local_port, port, data, source, addr)))
        self.counters["out_datagrams"] += 1
        return len(data), state

    def recv(self, sid: int, bufsize: int, peek: bool = False) -> tuple[bytes, int, bytes, int]:
        """(source address, source port, data cut to bufsize, the datagram's whole length), or
        EAGAIN when none is queued (the shell decides whether to wait)."""
        sock = self._get(sid)
        if sock.error:
            code, sock.error = sock.error, 0
            raise UdpError(code)
        if not sock.queue:
            raise UdpError(errno.EAGAIN)
        src, src_port, payload = sock.queue[0]
        if not peek:
            sock.queue.popleft()
            sock.queued -= len(payload) + DATAGRAM_OVERHEAD
        return src, src_port, payload[:bufsize], len(payload)

    def readable(self, sid: int) -> bool:
        sock = self.sockets.get(sid)
        return sock is None or bool(sock.queue) or bool(sock.error)

    def poll_mask(self, sid: int) -> int:
        """Linux's udp_poll (datagram_poll): POLLIN with a datagram queued, POLLERR with an error
        pending, POLLOUT always (a send is handed to IP at once: no send queue fills); a socket
        closed under its watcher shows everything, so its next call learns EBADF."""
        sock = self.sockets.get(sid)
        if sock is None:
            return POLLIN | POLLOUT | POLLERR | POLLHUP
        return POLLOUT | (POLLIN if sock.queue else 0) | (POLLERR if sock.error else 0)

    def setsockopt(self, sid: int, level: int, name: int, value: int) -> list:
        sock = self._get(sid)
        if level != SOL_SOCKET:
            raise UdpError(errno.ENOPROTOOPT)
        if name == SO_REUSEADDR:
            sock.reuse_addr = bool(value)
        elif name == SO_REUSEPORT:
            sock.reuse_port = bool(value)
        elif name == SO_BROADCAST:
            sock.broadcast = bool(value)
        elif name == SO_RCVBUF:      # as Linux's sock_setsockopt: doubled, clamped
            sock.rcvbuf = max(min(max(value, 0), RMEM_MAX) * 2, MIN_RCVBUF)
        elif name == SO_SNDBUF:
            sock.sndbuf = max(min(max(value, 0), WMEM_MAX) * 2, MIN_SNDBUF)
        else:
            raise UdpError(errno.ENOPROTOOPT)
        return sock.state()

    def getsockopt(self, sid: int, level: int, name: int) -> int:
        sock = self._get(sid)
        if level != SOL_SOCKET:
            raise UdpError(errno.ENOPROTOOPT)
        if name == SO_ERROR:
            code, sock.error = sock.error, 0
            return code
        values = {SO_REUSEADDR: int(sock.reuse_addr), SO_REUSEPORT: int(sock.reuse_port),
                  SO_BROADCAST: int(sock.broadcast), SO_RCVBUF: sock.rcvbuf, SO_SNDBUF: sock.sndbuf,
                  SO_TYPE: SOCK_DGRAM}
        if name not in values:
            raise UdpError(errno.ENOPROTOOPT)
        return values[name]

    def close(self, sid: int) -> None:
        sock = self.sockets.pop(sid, None)
        if sock is not None and sock.local_port:
            self._release(sock)
        self.effects.woken.add(sid)          # a receive asleep on it ends (EBADF)

    # ---- input -----------------------------------------------------------------

    def datagram_in(self, src: bytes, dst: bytes, data: bytes | memoryview, verify: bool = True,
                    looped: bool = False, ip_header: bytes = b"") -> None:
        """One UDP datagram for us (ip_header: its IP header, for an ICMP error's quote)."""
        counters = self.counters
        try:
            src_port, dst_port, payload = parse_udp(data, src, dst, verify and not looped)
        except UdpParseError as exc:
            counters["in_errors"] += 1
            if exc.reason == "bad_checksum":
                counters["in_csum_errors"] += 1
            else:
                counters["drop_" + exc.reason] += 1
            return
        broadcast = dst in (b"\xff\xff\xff\xff", self.broadcast_addr)
        if broadcast:
            targets = [s for s in self.ports.get(dst_port, ()) if self._matches(s, src, src_port, dst) >= 0]
        else:
            best, best_score = None, -1
            for sock in self.ports.get(dst_port, ()):
                score = self._matches(sock, src, src_port, dst)
                if score > best_score or (score == best_score and score >= 0 and sock.bound_order > best.bound_order):
                    best, best_score = sock, score
            targets = [best] if best is not None and best_score >= 0 else []
        if not targets:
            counters["no_ports"] += 1
            if broadcast:
                counters["drop_broadcast_no_port"] += 1   # RFC 1122 3.2.2: no ICMP error about a broadcast
            elif looped:                                  # over loopback the error comes straight back
                self.icmp_error_in(ICMP_DEST_UNREACHABLE, ICMP_PORT_UNREACHABLE, src, dst, src_port, dst_port)
            else:
                self.effects.unreachable.append(bytes(ip_header) + bytes(data[:8]))
            return
        payload = bytes(payload)
        cost = len(payload) + DATAGRAM_OVERHEAD
        for sock in targets:
            if sock.queued > sock.rcvbuf:                 # __udp_enqueue_schedule_skb
                sock.drops += 1
                counters["rcvbuf_errors"] += 1
                counters["in_errors"] += 1
                continue
            sock.queue.append((src, src_port, payload))
            sock.queued += cost
            counters["in_datagrams"] += 1
            self.effects.woken.add(sock.sid)

    @staticmethod
    def _matches(sock: UdpSocket, src: bytes, src_port: int, dst: bytes) -> int:
        """-1 when sock does not take this datagram, else its score (higher: more specific)."""
        score = 0
        if sock.local_addr != ANY:
            if sock.local_addr != dst:
                return -1
            score += 4
        if sock.peer_addr is not None:
            if sock.peer_addr != src or sock.peer_port != src_port:
                return -1
            score += 8
        return score

    def icmp_error_in(self, icmp_type: int, code: int, quoted_src: bytes, quoted_dst: bytes,
                      src_port: int, dst_port: int) -> None:
        """An ICMP error about a datagram we sent (from quoted_src:src_port to quoted_dst:dst_port).

        As Linux without IP_RECVERR: only a connected socket learns of it, as its pending
        error (ECONNREFUSED for port unreachable)."""
        self.counters["icmp_errors_in"] += 1
        if icmp_type != ICMP_DEST_UNREACHABLE:
            self.counters["icmp_errors_unmatched"] += 1
            return
        for sock in self.ports.get(src_port, ()):
            if sock.peer_addr == quoted_dst and sock.peer_port == dst_port and \
                    sock.local_addr in (quoted_src, ANY):
                sock.error = _UNREACHABLE_ERRNO.get(code, errno.EHOSTUNREACH)
                self.effects.woken.add(sock.sid)
                return
        self.counters["icmp_errors_unmatched"] += 1

    # ---- listing ---------------------------------------------------------------

    def listing(self) -> list[dict]:
        rows = []
        for sock in self.sockets.values():
            rows.append({
                "sid": sock.sid, "proto": "udp",
                "state": "ESTABLISHED" if sock.peer_addr is not None else "UNCONN",
                "local": [addr_to_str(sock.local_addr), sock.local_port],
                "remote": [addr_to_str(sock.peer_addr), sock.peer_port] if sock.peer_addr else ["0.0.0.0", 0],
                "recv_q": sock.queued, "datagrams_queued": len(sock.queue), "drops": sock.drops,
                "rcvbuf": sock.rcvbuf})
        return rows
