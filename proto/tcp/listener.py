"""LISTEN: new connections from SYNs (tcp_conn_request), the SYN and accept queues.

Like Linux: the accept queue is full when it holds more than `backlog`
children (so listen(0) still admits one); a SYN arriving then is dropped
silently (listen_overflows, listen_drops), and so is the handshake's final
ACK (the child stays in SYN_RCVD and retransmits its SYN+ACK).
"""
from __future__ import annotations

from proto.tcp import seqnum, snd
from proto.tcp.congestion import make as make_congestion_control
from proto.tcp.connection import Connection
from proto.tcp.context import Context
from proto.tcp.handshake import enter_established, take_syn_options
from proto.tcp.rcvbuf import choose_wscale, rcvbuf_ceiling, syn_window
from proto.tcp.state import State
from proto.wire.tcp import TcpSegment

S = State
SYN, RST, ACK = 0x02, 0x04, 0x10
MASK = seqnum.MASK
INHERITED = ("so_reuseaddr", "so_keepalive", "so_linger", "so_rcvbuf", "so_sndbuf", "rcvbuf_locked",
             "sndbuf_locked", "tcp_nodelay",
             "tcp_maxseg", "tcp_keepidle", "tcp_keepintvl", "tcp_keepcnt")


def accept_queue_full(listener: Connection) -> bool:
    return len(listener.accept_queue) > listener.backlog        # Linux sk_acceptq_is_full


def listen_arrives(cx: Context, listener: Connection, now: float, src: str, dst: str,
                   seg: TcpSegment, isn: int | None = None) -> None:
    flags = int(seg.flags)
    if flags & RST:
        cx.count("drop_listen_rst")
        return
    if flags & ACK:
        cx.count("drop_listen_ack")
        cx.reply_reset(dst, src, seg)
        return
    if not flags & SYN:
        cx.count("drop_listen_no_syn")
        return
    if accept_queue_full(listener):
        cx.counters["listen_overflows"] += 1
        cx.counters["listen_drops"] += 1
        return
    if len(listener.syn_queue) >= max(listener.backlog, cx.config.max_backlog):
        cx.counters["listen_drops"] += 1
        cx.count("drop_syn_queue_full")
        return
    child = cx.new_connection(state=S.LISTEN)
    for name in INHERITED:
        setattr(child, name, getattr(listener, name))
    child.cc = make_congestion_control(listener.cc.name)     # the listener's choice, state of its own
    child.user_open = False
    child.local_addr = dst
    child.remote_addr = src
    child.remote_port = seg.src_port
    child.parent = listener.id
    listener.syn_queue.add(child.id)
    cx.attach(child, seg.dst_port)
    take_syn_options(cx, child, seg)
    if child.wscale_ok:
        child.rcv_wscale = choose_wscale(rcvbuf_ceiling(child))
    iss = isn if isn is not None else cx.isn(now, seg.dst_port, src, seg.src_port)
    child.iss = child.snd_una = iss
    child.snd_nxt = child.snd_max = child.send_buffer_seq = (iss + 1) & MASK
    child.snd_wnd = child.max_snd_wnd = seg.window
    child.snd_wl1 = seg.seq
    child.snd_wl2 = iss
    child.rcv_adv = (child.rcv_nxt + syn_window(child)) & MASK
    child.rtt.rto = cx.config.rto_initial
    child.rtt.seq = child.snd_nxt
    child.rtt.time = now
    child.last_recv = now
    cx.set_state(child, now, S.SYN_RCVD, "SYN / SYN+ACK")
    snd.send_syn(cx, child)
    cx.arm(child, "retransmit", now + child.rtt.rto)


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
