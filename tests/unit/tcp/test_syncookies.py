"""SYN cookies (RFC 4987; Linux tcp_syncookies): a full SYN queue answers with a cookie and keeps
nothing; the ACK that brings a valid cookie back makes the connection, with the MSS, window
scale and SACK-permitted the peer's SYN offered; a forged, stale or misplaced one is rejected."""
from proto.tcp import syncookies
from proto.tcp.state import State
from proto.wire.tcp import TcpOptions

from .factory import ACK, PEER_ADDR, PSH, RST, SECRET, SYN, Peer, listening

KEY = SECRET
TUPLE = ("198.18.0.2", 80, PEER_ADDR, 40000)


def fill_syn_queue(eng, peer, n):
    """n half-open children from other ports (as a flood would leave)."""
    for i in range(n):
        other = Peer(eng, port=50000 + i, engine_port=peer.engine_port)
        other.send(SYN, options=other.syn_options())
        other.take()


# ---------------------------------------------------------------- the cookie itself
def test_cookie_round_trip_keeps_mss_wscale_and_sack():
    for mss, ws, sack, want_mss in ((1460, 7, True, 1460), (1400, None, False, 1300), (9000, 14, True, 1460),
                                   (536, 0, False, 536), (100, 20, True, 536), (None, 3, False, 536)):
        c = syncookies.make(KEY, 1000.0, TUPLE, 12345, mss, ws, sack)
        said = syncookies.check(KEY, 1000.0, TUPLE, 12345, c)
        assert said == syncookies.CookieOptions(want_mss, None if ws is None else min(ws, 14), sack)


def test_cookie_checks_only_for_its_tuple_isn_and_key():
    c = syncookies.make(KEY, 1000.0, TUPLE, 12345, 1460, 7, True)
    assert syncookies.check(KEY, 1000.0, TUPLE, 12346, c) is None
    assert syncookies.check(KEY, 1000.0, TUPLE[:3] + (40001,), 12345, c) is None
    assert syncookies.check(b"another key", 1000.0, TUPLE, 12345, c) is None
    # the clear data bits are covered by the hash: changing them breaks the cookie
    for bit in range(syncookies.DATA_BITS):
        assert syncookies.check(KEY, 1000.0, TUPLE, 12345, c ^ (1 << bit)) is None


def test_cookie_expires_after_a_few_minutes():
    c = syncookies.make(KEY, 1000.0, TUPLE, 1, 1460, None, False)
    period = syncookies.COOKIE_PERIOD
    assert syncookies.check(KEY, 1000.0 + 2 * period, TUPLE, 1, c) is not None
    assert syncookies.check(KEY, 1000.0 + (syncookies.MAX_AGE_TICKS + 1) * period, TUPLE, 1, c) is None
    assert syncookies.check(KEY, 1000.0 - period, TUPLE, 1, c) is None      # from the future


def test_random_cookies_are_rejected():
    import random
    rng = random.Random(7)
    hits = sum(syncookies.check(KEY, 1000.0, TUPLE, 1, rng.getrandbits(32)) is not None for _ in range(20000))
    assert hits == 0


# ---------------------------------------------------------------- the listener
def test_full_syn_queue_answers_with_a_cookie_and_keeps_nothing():
    eng, lsid, peer = listening(backlog=4, max_backlog=4, syncookies=1)
    fill_syn_queue(eng, peer, 4)
    conns = len(eng.conns)
    peer.send(SYN, options=TcpOptions(mss=1460, window_scale=7, sack_permitted=True))
    synack = peer.take_one()
    assert synack.flags == SYN | ACK and synack.ack == peer.iss + 1
    assert synack.options.mss == 1460 and synack.options.window_scale is not None
    assert synack.options.sack_permitted
    assert len(eng.conns) == conns                       # nothing kept
    assert eng.counters["syncookies_sent"] == 1
    assert syncookies.check(KEY, peer.now, TUPLE, peer.iss, synack.seq) is not None


def test_cookie_ack_makes_an_established_connection_with_the_peer_options():
    eng, lsid, peer = listening(backlog=4, max_backlog=4, syncookies=1)
    fill_syn_queue(eng, peer, 4)
    peer.send(SYN, options=TcpOptions(mss=1440, window_scale=5, sack_permitted=True))
    synack = peer.take_one()
    peer.now += 30.0
    peer.send(ACK | PSH, payload=b"hello")          # data on the cookie ACK is kept, as Linux does
    sid, addr = peer.call("accept", lsid)
    conn = eng.conns[sid]
    assert addr == (PEER_ADDR, peer.port)
    assert conn.state is State.ESTABLISHED
    assert conn.iss == synack.seq and conn.irs == peer.iss
    assert conn.send_mss == 1440 and conn.wscale_ok and conn.snd_wscale == 5 and conn.sack_ok
    assert conn.rcv_wscale == synack.options.window_scale
    assert peer.call("recv", sid, 100) == b"hello"
    assert eng.counters["syncookies_recv"] == 1 and eng.counters["passive_opens"] == 1
    peer.call("send", sid, b"world")
    assert b"world" in bytes(peer.received) or any(s.payload == b"world" for s in peer.take())


def test_cookie_without_wscale_or_sack_in_the_syn():
    eng, lsid, peer = listening(backlog=4, max_backlog=4, syncookies=1)
    fill_syn_queue(eng, peer, 4)
    peer.send(SYN, options=TcpOptions(mss=1300))
    synack = peer.take_one()
    assert synack.options.window_scale is None and not synack.options.sack_permitted
    peer.send(ACK)
    sid, _ = peer.call("accept", lsid)
    conn = eng.conns[sid]
    assert conn.send_mss == 1300 and not conn.wscale_ok and conn.rcv_wscale == 0 and not conn.sack_ok


def test_forged_or_stale_cookie_ack_is_rejected_with_a_reset():
    eng, lsid, peer = listening(backlog=4, max_backlog=4, syncookies=1)
    fill_syn_queue(eng, peer, 4)
    peer.send(SYN, options=peer.syn_options())
    synack = peer.take_one()
    peer.send(ACK, ack=synack.seq + 2, advance=False)             # not the cookie
    rst = peer.take_one()
    assert rst.flags == RST and eng.counters["syncookies_failed"] == 1
    peer.now += (syncookies.MAX_AGE_TICKS + 1) * syncookies.COOKIE_PERIOD
    peer.send(ACK, advance=False)                                  # the cookie, too old
    assert peer.take_one().flags == RST
    assert eng.counters["syncookies_failed"] == 2 and eng.counters["syncookies_recv"] == 0
    assert peer.error_of("accept", lsid) is not None


def test_ack_at_a_listener_that_sent_no_cookie_is_not_checked():
    eng, lsid, peer = listening()
    peer.send(ACK, seq=5, ack=1234)
    assert peer.take_one().flags == RST
    assert eng.counters["syncookies_failed"] == 0


def test_syncookies_0_drops_and_2_always_answers_with_a_cookie():
    eng, lsid, peer = listening(backlog=2, max_backlog=2, syncookies=0)
    fill_syn_queue(eng, peer, 2)
    peer.send(SYN, options=peer.syn_options())
    peer.expect_nothing()
    assert eng.counters["drop_syn_queue_full"] == 1 and eng.counters["syncookies_sent"] == 0

    eng, lsid, peer = listening(syncookies=2)
    peer.send(SYN, options=peer.syn_options())
    synack = peer.take_one()
    assert eng.counters["syncookies_sent"] == 1 and not eng.listeners[80].syn_queue
    peer.send(ACK)
    sid, _ = peer.call("accept", lsid)
    assert eng.conns[sid].iss == synack.seq


def _cookie_then_full_accept_queue(backlog=1, max_syn_backlog=1024, extra=0):
    """A burst as 200 asyncio clients make: `peer`'s SYN (and `extra` others') gets a cookie while
    the accept queue has room, then other handshakes fill the accept queue before its ACK arrives."""
    eng, lsid, peer = listening(backlog=backlog, max_backlog=backlog, syncookies=1, max_syn_backlog=max_syn_backlog)
    first = Peer(eng, port=41000, engine_port=80)
    first.send(SYN, options=first.syn_options())
    first.take_one()
    others = [Peer(eng, port=43000 + i, engine_port=80) for i in range(extra)]
    for p in [peer, *others]:
        p.send(SYN, options=p.syn_options())            # the SYN queue is full: a cookie
    synack = peer.take_one()
    for p in others:
        p.take_one()
    assert eng.counters["syncookies_sent"] == 1 + extra
    first.send(ACK)
    for i in range(backlog):
        other = Peer(eng, port=42000 + i, engine_port=80)
        other.send(SYN, options=other.syn_options())
        other.take_one()
        other.send(ACK)
    assert len(eng.listeners[80].accept_queue) == backlog + 1          # full (Linux: more than backlog)
    return eng, lsid, peer, synack, others


def test_cookie_ack_at_a_full_accept_queue_keeps_a_request_and_never_resets_the_peer():
    """The peer whose cookie ACK met a full accept queue thinks itself connected and sends on:
    its next segments (sequence numbers past the cookie's) must not be checked as cookies and
    reset (they were: syncookies_failed); once the application accepts, its retransmission
    completes the connection and every byte arrives."""
    eng, lsid, peer, synack, _ = _cookie_then_full_accept_queue()
    peer.send(ACK)                                   # the cookie comes back: dropped, a request kept
    peer.expect_nothing()
    peer.send(ACK | PSH, payload=b"a" * 100)         # data past the cookie's sequence number
    peer.send(ACK | PSH, payload=b"b" * 100)
    assert all(not s.flags & RST for s in peer.take())
    assert eng.counters["syncookies_failed"] == 0 and eng.counters["out_rsts"] == 0
    assert eng.counters["syncookies_recv"] == 1 and eng.counters["listen_overflows"] >= 1
    while eng.listeners[80].accept_queue:
        peer.call("accept", lsid)
    peer.advance(1.0)                                # the request's SYN+ACK is retransmitted
    again = [s for s in peer.take() if s.flags == SYN | ACK]
    assert again and again[0].seq == synack.seq
    peer.send(ACK | PSH, payload=b"a" * 100, seq=peer.iss + 1)     # the peer retransmits from its start
    sid, _ = peer.call("accept", lsid)
    assert eng.conns[sid].state is State.ESTABLISHED and eng.conns[sid].iss == synack.seq
    peer.send(ACK | PSH, payload=b"b" * 100, seq=peer.iss + 101)
    assert peer.call("recv", sid, 1000) == b"a" * 100 + b"b" * 100


def test_cookie_requests_beyond_max_syn_backlog_are_dropped_as_linux():
    eng, lsid, peer, synack, others = _cookie_then_full_accept_queue(max_syn_backlog=3, extra=3)
    listener = eng.listeners[80]
    for other in others:                             # three requests kept from cookies
        other.send(ACK)
        other.expect_nothing()
    assert len(listener.syn_queue) == 3
    peer.send(ACK)                                   # a fourth: dropped, nothing kept (Linux)
    peer.expect_nothing()
    assert eng.counters["syncookies_recv"] == 4 and len(listener.syn_queue) == 3


def test_timestamps_survive_a_cookie():
    """A peer that offered timestamps gets them in the cookie's SYN+ACK; its ACK, echoing them,
    makes a connection that goes on with them and with the same clock."""
    eng, lsid, peer = listening(syncookies=2, timestamps=1)
    peer.send(SYN, options=TcpOptions(mss=1460, window_scale=7, sack_permitted=True, timestamps=(500, 0)))
    synack = peer.take_one()
    assert synack.options.timestamps is not None and synack.options.timestamps[1] == 500
    tsval = synack.options.timestamps[0]
    peer.now += 0.25
    peer.send(ACK, options=TcpOptions(timestamps=(501, tsval)))
    sid, _ = peer.call("accept", lsid)
    conn = eng.conns[sid]
    assert conn.ts_ok and conn.ts_recent == 501
    peer.call("send", sid, b"data")
    seg = peer.take()[-1]
    assert seg.options.timestamps[1] == 501
    assert (seg.options.timestamps[0] - tsval) & 0xFFFFFFFF == 250          # the same clock, 250 ms on
