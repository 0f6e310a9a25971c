"""LISTEN: new connections from SYNs (tcp_conn_request), the SYN and accept queues.

Like Linux: the accept queue is full when it holds more than `backlog`
children (so listen(0) still admits one); a SYN arriving then is dropped
silently (listen_overflows, listen_drops), and so is the handshake's final
ACK (the child stays in SYN_RCVD and retransmits its SYN+ACK).  When the SYN
queue is full (or always, `tcp.syncookies` = 2), a SYN gets a SYN cookie
instead of a child (syncookies.py); the ACK that brings a valid one back makes
the child then (kept as a request when the accept queue is full: cookie_child).
"""
from __future__ import annotations

from types import SimpleNamespace

from proto.tcp import seqnum, snd, syncookies
from proto.tcp.congestion import make as make_congestion_control
from proto.tcp.connection import Connection
from proto.tcp.context import Context
from proto.tcp.handshake import enter_established, take_syn_options
from proto.tcp.rcvbuf import choose_wscale, rcvbuf_ceiling, syn_window
from proto.tcp.state import State
from proto.wire.tcp import FLAGS_BY_VALUE, TcpOptions, TcpSegment

S = State
SYN, RST, ACK = 0x02, 0x04, 0x10
MASK = seqnum.MASK
INHERITED = ("so_reuseaddr", "so_keepalive", "so_linger", "so_rcvbuf", "so_sndbuf", "rcvbuf_locked",
             "sndbuf_locked", "tcp_nodelay",
             "tcp_maxseg", "tcp_keepidle", "tcp_keepintvl", "tcp_keepcnt")


def accept_queue_full(listener: Connection) -> bool:
    return len(listener.accept_queue) > listener.backlog        # Linux sk_acceptq_is_full


def listen_arrives(cx: Context, listener: Connection, now: float, src: str, dst: str,
                   seg: TcpSegment, isn: int | None = None) -> Connection | None:
    """A segment for a listener.  Returns a child made from a valid SYN cookie: the caller
    hands it the segment (rcv.segment_arrives), which completes the handshake."""
    flags = int(seg.flags)
    if flags & RST:
        cx.count("drop_listen_rst")
        return None
    if flags & ACK:
        if not flags & SYN and cookies_expected(cx, listener, now):
            said = syncookies.check(cx.key, now, (dst, seg.dst_port, src, seg.src_port), (seg.seq - 1) & MASK,
                                    (seg.ack - 1) & MASK)
            if said is not None:
                cx.count("syncookies_recv")
                return cookie_child(cx, listener, now, src, dst, seg, said)
            cx.count("syncookies_failed")
        cx.count("drop_listen_ack")
        cx.reply_reset(dst, src, seg)
        return None
    if not flags & SYN:
        cx.count("drop_listen_no_syn")
        return None
    if accept_queue_full(listener):
        cx.counters["listen_overflows"] += 1
        cx.counters["listen_drops"] += 1
        return None
    mode = cx.config.syncookies
    if mode == syncookies.ALWAYS or len(listener.syn_queue) >= syn_queue_limit(cx, listener):
        if mode == syncookies.OFF:
            cx.counters["listen_drops"] += 1
            cx.count("drop_syn_queue_full")
        else:
            send_cookie(cx, listener, now, src, dst, seg)
        return None
    child = _child(cx, listener, now, src, dst, seg)
    iss = isn if isn is not None else cx.isn(now, seg.dst_port, src, seg.src_port)
    _start_syn_rcvd(cx, child, now, seg, iss)
    child.rtt.seq = child.snd_nxt
    child.rtt.time = now
    snd.send_syn(cx, child)
    cx.arm(child, "retransmit", now + child.rtt.rto)
    return None


def syn_queue_limit(cx: Context, listener: Connection) -> int:
    """Half-open children a listener keeps before its SYNs get cookies (or are dropped)."""
    return max(listener.backlog, cx.config.max_backlog)


def _child(cx: Context, listener: Connection, now: float, src: str, dst: str, syn: TcpSegment) -> Connection:
    """A new child of the listener for the peer's SYN, in its SYN queue and the tables (still LISTEN)."""
    child = cx.new_connection(state=S.LISTEN)
    for name in INHERITED:
        setattr(child, name, getattr(listener, name))
    child.cc = make_congestion_control(listener.cc.name)     # the listener's choice, state of its own
    child.user_open = False
    child.local_addr = dst
    child.remote_addr = src
    child.remote_port = syn.src_port
    child.parent = listener.id
    listener.syn_queue.add(child.id)
    cx.attach(child, syn.dst_port)
    take_syn_options(cx, child, syn)
    if child.wscale_ok:
        child.rcv_wscale = choose_wscale(rcvbuf_ceiling(child))
    return child


def _start_syn_rcvd(cx: Context, child: Connection, now: float, syn: TcpSegment, iss: int) -> None:
    child.iss = child.snd_una = iss
    child.snd_nxt = child.snd_max = child.send_buffer_seq = (iss + 1) & MASK
    child.snd_wnd = child.max_snd_wnd = syn.window
    child.snd_wl1 = syn.seq
    child.snd_wl2 = iss
    child.rcv_adv = (child.rcv_nxt + syn_window(child)) & MASK
    child.rtt.rto = cx.config.rto_initial
    child.last_recv = now
    cx.set_state(child, now, S.SYN_RCVD, "SYN / SYN+ACK")


# ---------------------------------------------------------------- SYN cookies (syncookies.py)
def cookies_expected(cx: Context, listener: Connection, now: float) -> bool:
    """Linux tcp_synq_no_recent_overflow: an ACK at a listener is checked as a cookie only if
    cookies are always on, or the listener sent one recently enough for it to be valid."""
    mode = cx.config.syncookies
    if mode == syncookies.ALWAYS:
        return True
    sent = listener.cookie_sent_at
    return (mode != syncookies.OFF and sent is not None
            and now - sent <= (syncookies.MAX_AGE_TICKS + 1) * syncookies.COOKIE_PERIOD)


def send_cookie(cx: Context, listener: Connection, now: float, src: str, dst: str, syn: TcpSegment) -> None:
    """Answer a SYN with a SYN+ACK whose ISS is a cookie, keeping nothing (tcp_conn_request's
    want_cookie path)."""
    o = syn.options
    cookie = syncookies.make(cx.key, now, (dst, syn.dst_port, src, syn.src_port), syn.seq,
                             o.mss, o.window_scale, o.sack_permitted)
    wscale = choose_wscale(rcvbuf_ceiling(listener)) if o.window_scale is not None else None
    free = listener.so_rcvbuf
    timestamps = None
    if cx.config.timestamps and o.timestamps is not None:
        # the child's clock offset follows from the four-tuple alone (Context.ts_offset), so
        # the connection the ACK makes goes on with this clock; the ACK's own timestamps say
        # the peer offered them
        tuple_only = SimpleNamespace(local_addr=dst, local_port=syn.dst_port, remote_addr=src,
                                     remote_port=syn.src_port)
        tuple_only.ts_offset = cx.ts_offset(tuple_only)
        timestamps = (cx.tsval(tuple_only), o.timestamps[0])
    options = TcpOptions(mss=snd.our_mss(cx, listener), window_scale=wscale,
                         sack_permitted=o.sack_permitted, timestamps=timestamps)
    cx.transmit(dst, src, TcpSegment(syn.dst_port, syn.src_port, cookie, (syn.seq + 1) & MASK,
                                     FLAGS_BY_VALUE[SYN | ACK], 0xFFFF if free > 0xFFFF else free, 0, options))
    listener.cookie_sent_at = now
    cx.count("syncookies_sent")


def cookie_child(cx: Context, listener: Connection, now: float, src: str, dst: str, seg: TcpSegment,
                 said: syncookies.CookieOptions) -> Connection | None:
    """The ACK brought a valid cookie back (cookie_v4_check): a child in SYN_RCVD made from what
    the cookie says; the caller hands it the ACK, which moves it to the accept queue.

    When the accept queue is full, Linux drops the ACK and keeps nothing; but the peer thinks
    itself connected and sends on, and its next segment, whose sequence number is past the
    cookie's, fails the check and is answered with a reset (a burst of 200 asyncio clients at a
    listener saw this: the cookies were sent while the accept queue had room, the ACKs found it
    full).  Here the child is kept in the SYN queue as though the SYN had been queued: the ACK is
    dropped, its SYN+ACK is retransmitted, and the peer's next ACK completes it once the
    application has accepted.  Only a peer that received our SYN+ACK can return a valid cookie
    (a spoofed flood cannot), and the SYN queue holds at most `tcp.max_syn_backlog` children
    this way (as Linux's tcp_max_syn_backlog bounds its requests): beyond that the ACK is
    dropped as Linux does (None)."""
    if accept_queue_full(listener) and len(listener.syn_queue) >= max(syn_queue_limit(cx, listener),
                                                                      cx.config.max_syn_backlog):
        cx.counters["listen_overflows"] += 1
        cx.counters["listen_drops"] += 1
        return None
    peer_isn = (seg.seq - 1) & MASK
    syn = TcpSegment(seg.src_port, seg.dst_port, peer_isn, 0, FLAGS_BY_VALUE[SYN], seg.window, 0,
                     TcpOptions(mss=said.mss, window_scale=said.window_scale,
                                sack_permitted=said.sack_permitted,
                                timestamps=None if seg.options.timestamps is None else (seg.options.timestamps[0], 0)))
    child = _child(cx, listener, now, src, dst, syn)
    _start_syn_rcvd(cx, child, now, syn, (seg.ack - 1) & MASK)
    child.rtt.seq = None                  # no RTT sample from a handshake we did not time
    if child.ts_ok:
        child.ts_offset = cx.ts_offset(child)       # the clock the cookie's SYN+ACK used
    if accept_queue_full(listener):
        cx.arm(child, "retransmit", now + child.rtt.rto)    # its ACK will be dropped: a request, as any
    return child


def child_established(cx: Context, child: Connection, now: float) -> bool:
    """The handshake's final ACK: move the child to its listener's accept queue. False: dropped."""
    listener = cx.conns.get(child.parent)
    if listener is None or listener.state is not S.LISTEN:
        cx.count("drop_orphan_child")
        return False
    if accept_queue_full(listener):
        cx.counters["listen_overflows"] += 1
        cx.counters["listen_drops"] += 1
        return False
    listener.syn_queue.discard(child.id)
    listener.accept_queue.append(child.id)
    child.queued = True
    enter_established(cx, child, now, "ACK")
    cx.counters["passive_opens"] += 1
    cx.wake(listener)
    return True


def close_listener(cx: Context, listener: Connection, now: float) -> None:
    """Stop listening: unaccepted children that completed the handshake get a RST (Linux
    inet_csk_listen_stop); children still in SYN_RCVD are dropped silently."""
    for cid in list(listener.syn_queue):
        child = cx.conns.get(cid)
        if child is not None and child.state is not S.CLOSED:
            cx.set_state(child, now, S.CLOSED, "listener closed")
    listener.syn_queue.clear()
    while listener.accept_queue:
        child = cx.conns.get(listener.accept_queue.popleft())
        if child is None:
            continue
        child.queued = False
        child.parent = None
        if child.state is not S.CLOSED:
            if child.state is not S.TIME_WAIT:
                snd.send_rst(cx, child)
            cx.set_state(child, now, S.CLOSED, "listener closed / RST")
        else:
            cx.forget(child)
    cx.set_state(listener, now, S.CLOSED, "close")
