"""Build a TCP engine with a connection in any state, in one line (smoltcp's socket_established()).

    eng, sid, peer = established()
    eng, sid, peer = in_state(State.FIN_WAIT_1)

`peer` is a fake remote TCP.  It crafts segments (tracking its own sequence
numbers and what it has received), collects everything the engine emits, and
is also the test's clock and timer service: `peer.advance(dt)` fires the
engine's timers that fall due, in deadline order.
"""
from __future__ import annotations

import errno
from typing import NamedTuple

from proto.tcp import seqnum
from proto.tcp.config import TcpConfig
from proto.tcp.connection import Connection
from proto.tcp.engine import TcpEngine, TcpError
from proto.tcp.state import State
from proto.wire.tcp import NO_OPTIONS, TcpFlags, TcpOptions, TcpSegment

ENGINE_ADDR = "198.18.0.2"
PEER_ADDR = "198.18.0.1"
SECRET = b"unit-test-secret"
START = 1000.0

F = TcpFlags
ACK, SYN, FIN, RST, PSH = F.ACK, F.SYN, F.FIN, F.RST, F.PSH


def make_engine(**config) -> TcpEngine:
    eng = TcpEngine(TcpConfig(**config), ENGINE_ADDR, SECRET)
    eng.strict = True              # a bug in the engine raises in tests
    return eng


class Hub:
    """What all the peers of one engine share: the clock, the timer table, the effects log."""

    def __init__(self, eng: TcpEngine, now: float):
        self.eng = eng
        self.now = now
        self.peers: dict[int, "Peer"] = {}
        self.timers: dict[tuple[int, str], float] = {}
        self.transitions = []
        self.woken: set[int] = set()
        self.all_segments: list[TcpSegment] = []

    def collect(self) -> None:
        eff = self.eng.take_effects()
        first = next(iter(self.peers.values()), None)
        for src, dst, seg in eff.segments:
            self.all_segments.append(seg)
            peer = self.peers.get(seg.dst_port, first)
            if peer is not None:
                peer.inbox.append(seg)
                peer.all_segments.append(seg)
                if dst == peer.addr and seg.dst_port == peer.port:
                    peer._track(seg)
        for key, deadline in eff.timers:
            if deadline is None:
                self.timers.pop(key, None)
            else:
                self.timers[key] = deadline
        self.woken |= eff.woken
        self.transitions.extend(eff.transitions)


class Peer:
    """The remote end of one connection; through its hub also the fake clock and timer service."""

    def __init__(self, eng: TcpEngine, port: int = 40000, engine_port: int = 80, now: float = START,
                 iss: int = 1_000_000, window: int = 65535, mss: int | None = 1460, wscale: int | None = None):
        hub = getattr(eng, "_test_hub", None)
        if hub is None:
            hub = eng._test_hub = Hub(eng, now)
        self.hub = hub
        hub.peers[port] = self
        self.eng = eng
        self.addr = PEER_ADDR
        self.port = port
        self.engine_port = engine_port
        self.iss = iss
        self.seq = iss                     # our next sequence number
        self.ack = 0                       # next byte expected from the engine
        self.window = window
        self.mss = mss
        self.wscale = wscale
        self.received = bytearray()        # in-order payload received from the engine
        self.inbox: list[TcpSegment] = []  # segments from the engine not yet taken
        self.all_segments: list[TcpSegment] = []
        self.conn: Connection | None = None    # the connection under test

    @property
    def now(self) -> float:
        return self.hub.now

    @now.setter
    def now(self, value: float) -> None:
        self.hub.now = value

    @property
    def timers(self):
        return self.hub.timers

    @property
    def transitions(self):
        return self.hub.transitions

    @property
    def woken(self):
        return self.hub.woken

    def collect(self) -> None:
        self.hub.collect()

    def _track(self, seg: TcpSegment) -> None:
        if seg.flags & RST:
            return
        if seg.flags & SYN:
            self.ack = (seg.seq + 1) & seqnum.MASK
            return
        if seg.seq == self.ack:
            self.received += seg.payload
            self.ack = (self.ack + len(seg.payload) + (1 if seg.flags & FIN else 0)) & seqnum.MASK

    def take(self) -> list[TcpSegment]:
        self.collect()
        out, self.inbox = self.inbox, []
        return out

    def take_one(self) -> TcpSegment:
        segs = self.take()
        assert len(segs) == 1, f"expected one segment, got {segs}"
        return segs[0]

    def expect_nothing(self) -> None:
        segs = self.take()
        assert segs == [], f"expected no segment, got {segs}"

    # ------------------------------------------------------------ input to the engine
    def segment(self, flags=ACK, payload: bytes = b"", seq: int | None = None, ack: int | None = None,
                window: int | None = None, options: TcpOptions = NO_OPTIONS) -> TcpSegment:
        return TcpSegment(self.port, self.engine_port, (self.seq if seq is None else seq) & seqnum.MASK,
                          (self.ack if ack is None else ack) & seqnum.MASK, TcpFlags(flags),
                          self.window if window is None else window, 0, options, payload)

    def deliver(self, seg: TcpSegment) -> None:
        self.eng.segment_in(self.now, self.addr, ENGINE_ADDR, seg)
        self.collect()

    def send(self, flags=ACK, payload: bytes = b"", seq: int | None = None, ack: int | None = None,
             window: int | None = None, options: TcpOptions = NO_OPTIONS, advance: bool | None = None) -> TcpSegment:
        """Craft and deliver a segment; by default our sequence number advances when `seq` is not given."""
        seg = self.segment(flags, payload, seq, ack, window, options)
        if advance if advance is not None else seq is None:
            self.seq = (self.seq + seg.seg_len) & seqnum.MASK
        self.deliver(seg)
        return seg

    def syn_options(self) -> TcpOptions:
        return TcpOptions(mss=self.mss, window_scale=self.wscale)

    def call(self, name: str, *args):
        """Call an engine socket method at the current time and collect its effects."""
        try:
            return getattr(self.eng, name)(self.now, *args)
        finally:
            self.collect()

    def error_of(self, name: str, *args) -> int | None:
        """The errno a socket call raises (None if it returns)."""
        try:
            self.call(name, *args)
        except TcpError as e:
            return e.errno
        return None

    # ------------------------------------------------------------ clock and timers
    def advance(self, dt: float) -> None:
        """Let `dt` seconds pass, firing due timers in deadline order."""
        target = self.now + dt
        while True:
            self.collect()
            due = [(d, k) for k, d in self.timers.items() if d <= target + 1e-9]
            if not due:
                break
            deadline, key = min(due)
            del self.timers[key]
            self.now = max(self.now, deadline)
            self.eng.timer_fired(self.now, key)
        self.now = target

    def deadline(self, kind: str, conn: Connection | None = None) -> float | None:
        """The engine's deadline for a timer of the connection under test (None: not running)."""
        return (conn or self.conn).timers[kind]

    def run_timer(self, kind: str, conn: Connection | None = None) -> None:
        """Jump to a running timer's deadline and let everything due by then fire."""
        d = self.deadline(kind, conn)
        assert d is not None, f"{kind} timer not running"
        self.advance(max(0.0, d - self.now))


class Setup(NamedTuple):
    engine: TcpEngine
    sid: int
    peer: Peer


# ---------------------------------------------------------------- builders
def closed(peer_kwargs: dict | None = None, **config) -> Setup:
    eng = make_engine(**config)
    peer = Peer(eng, **(peer_kwargs or {}))
    sid = peer.call("socket")
    peer.conn = eng.conns[sid]
    return Setup(eng, sid, peer)


def listening(port: int = 80, backlog: int = 5, peer_kwargs: dict | None = None, **config) -> Setup:
    eng, sid, peer = closed(peer_kwargs, **config)
    peer.engine_port = port
    peer.call("bind", sid, "0.0.0.0", port)
    peer.call("listen", sid, backlog)
    return Setup(eng, sid, peer)


def accepted(mss: int, sack: bool = True, **config) -> Setup:
    """A passive connection accepted from a peer whose SYN offers MSS `mss` and SACK-permitted."""
    eng, lsid, peer = listening(**config)
    peer.send(SYN, options=TcpOptions(mss=mss, sack_permitted=sack))
    peer.take_one()
    peer.conn = eng.by_tuple[(peer.engine_port, peer.addr, peer.port)]
    peer.send(ACK)
    sid, _ = peer.call("accept", lsid)
    return Setup(eng, sid, peer)


def syn_sent(peer_kwargs: dict | None = None, **config) -> Setup:
    eng, sid, peer = closed(peer_kwargs, **config)
    assert peer.error_of("connect", sid, PEER_ADDR, peer.port) == errno.EINPROGRESS
    syn = peer.take_one()
    assert syn.flags == SYN
    peer.engine_port = syn.src_port
    return Setup(eng, sid, peer)


def syn_rcvd(peer_kwargs: dict | None = None, **config) -> Setup:
    """A passive child in SYN_RCVD.  sid is the listener's; peer.conn is the child."""
    eng, sid, peer = listening(peer_kwargs=peer_kwargs, **config)
    peer.send(SYN, options=peer.syn_options())
    synack = peer.take_one()
    assert synack.flags == SYN | ACK
    peer.conn = eng.by_tuple[(peer.engine_port, PEER_ADDR, peer.port)]
    return Setup(eng, sid, peer)


def established(active: bool = True, peer_kwargs: dict | None = None, **config) -> Setup:
    if active:
        eng, sid, peer = syn_sent(peer_kwargs, **config)
        peer.send(SYN | ACK, options=peer.syn_options())
        ack = peer.take_one()
        assert ack.flags == ACK
        assert peer.call("connect", sid, PEER_ADDR, peer.port) is None
    else:
        eng, lsid, peer = syn_rcvd(peer_kwargs, **config)
        peer.send(ACK)
        peer.expect_nothing()
        sid, _ = peer.call("accept", lsid)
        peer.conn = eng.conns[sid]
    assert peer.conn.state is State.ESTABLISHED
    return Setup(eng, sid, peer)


def in_state(state: State, active: bool = True, orphan: bool = False, peer_kwargs: dict | None = None,
             **config) -> Setup:
    """A connection in `state`.  Closing states are reached with shutdown(SHUT_WR), or close()
    when `orphan` (then sid is no longer usable, and peer.conn stays the TCB)."""
    S = State
    kw = dict(peer_kwargs=peer_kwargs, **config)
    if state is S.CLOSED:
        return closed(**kw)
    if state is S.LISTEN:
        return listening(**kw)
    if state is S.SYN_SENT:
        return syn_sent(**kw)
    if state is S.SYN_RCVD:
        return syn_rcvd(**kw)
    eng, sid, peer = established(active, **kw)
    conn = peer.conn

    def our_close():
        if orphan:
            peer.call("close", sid)
        else:
            peer.call("shutdown", sid, 1)
        fin = peer.take_one()
        assert fin.flags & FIN

    if state is S.ESTABLISHED:
        pass
    elif state in (S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSING, S.TIME_WAIT):
        our_close()
        if state is S.FIN_WAIT_2 or state is S.TIME_WAIT:
            peer.send(ACK)
        if state is S.CLOSING:
            peer.send(FIN | ACK, ack=peer.ack - 1)     # crosses our FIN: does not ACK it
            peer.take_one()
        if state is S.TIME_WAIT:
            peer.send(FIN | ACK)
            peer.take_one()
    elif state in (S.CLOSE_WAIT, S.LAST_ACK):
        peer.send(FIN | ACK)
        peer.take_one()
        if state is S.LAST_ACK:
            our_close()
    assert conn.state is state, (conn.state, state)
    return Setup(eng, sid, peer)


def wired(config_a: dict | None = None, config_b: dict | None = None):
    """Two engines (for back-to-back tests: see tests/unit/tcp/link.py)."""
    from .link import Link
    return Link(config_a or {}, config_b or {})
