"""The seven timers of the seed, per connection.

A timer is data: `conn.timers[kind]` is its deadline (None: not running).
`conn.armed[kind]` is what the timer service holds.  Arming earlier than the
service's deadline sends an arm effect; arming later or cancelling sends
nothing at once: when the service fires at the old deadline, `fire` sees the
deadline moved (re-arms) or gone (ignores).  This keeps the common path (an
ACK that restarts the retransmission timer) free of timer messages.  The
TIME_WAIT timer's message carries the connection's lazy cancels too
(`TcpEngine._cancel_lazy_timers`), so a short connection's timers do not
fire for nothing after it.
"""
from __future__ import annotations

import errno

from proto.tcp import delack, recovery, snd
from proto.tcp.connection import Connection
from proto.tcp.context import Context
from proto.tcp.state import SENDING, Recovery, State

S = State
EPSILON = 1e-6


def on_retransmit(cx: Context, conn: Connection, now: float) -> None:
    cfg = cx.config
    state = conn.state
    if state is S.SYN_SENT or state is S.SYN_RCVD:
        limit = cfg.syn_retries if conn.active_open else cfg.synack_retries
        if conn.retransmits >= limit:
            if conn.parent is not None:
                cx.set_state(conn, now, S.CLOSED, "SYN+ACK retries exhausted")
            else:
                cx.abort(conn, now, errno.ETIMEDOUT, "SYN retries exhausted")
            return
        conn.retransmits += 1
        conn.rtt.backoff(cfg.rto_max)
        snd.retransmit_head(cx, conn, now)
        conn.rtt.seq = None
        cx.arm(conn, "retransmit", now + conn.rtt.rto)
        return
    if state not in SENDING or conn.snd_una == conn.snd_max:
        return
    if conn.reo_armed:
        recovery.rack_timeout(cx, conn, now)
        return
    if conn.pto_armed:
        if conn.recovery is Recovery.OPEN:
            recovery.tail_loss_probe(cx, conn, now)
        else:                                        # recovery began after the probe timer was set
            conn.pto_armed = False
            cx.arm(conn, "retransmit", now + conn.rtt.rto)
        return
    if conn.retransmits >= cfg.max_retries:
        cx.counters["timeouts"] += 1
        cx.abort(conn, now, errno.ETIMEDOUT, "retransmission timeout")
        return
    conn.retransmits += 1
    recovery.enter_loss(cx, conn, now)               # the loss window; go back to SND.UNA
    conn.rtt.backoff(cfg.rto_max)
    snd.retransmit_head(cx, conn, now)
    cx.arm(conn, "retransmit", now + conn.rtt.rto)


def on_connect(cx: Context, conn: Connection, now: float) -> None:
    if conn.state in (S.SYN_SENT, S.SYN_RCVD) and conn.active_open:
        cx.abort(conn, now, errno.ETIMEDOUT, "connection establishment timeout")


def on_persist(cx: Context, conn: Connection, now: float) -> None:
    if conn.state not in SENDING or conn.snd_una != conn.snd_max or conn.unsent <= 0:
        return
    if conn.snd_wnd == 0:
        if conn.probes_out >= cx.config.max_retries:
            cx.abort(conn, now, errno.ETIMEDOUT, "zero window probes unanswered")
            return
        conn.probes_out += 1
        conn.persist_backoff += 1
        cx.counters["window_probes"] += 1
        snd.send_probe(cx, conn)
        cx.arm(conn, "persist", now + snd.persist_interval(cx, conn))
    else:
        conn.persist_backoff += 1
        snd.output(cx, conn, now, force=True)       # the SWS override: send what fits


def on_fin_wait_2(cx: Context, conn: Connection, now: float) -> None:
    if conn.state is S.FIN_WAIT_2 and not conn.user_open:
        cx.set_state(conn, now, S.CLOSED, "FIN_WAIT_2 timeout")


def on_time_wait(cx: Context, conn: Connection, now: float) -> None:
    if conn.state is S.TIME_WAIT:
        cx.set_state(conn, now, S.CLOSED, "2MSL timeout")


def on_delayed_ack(cx: Context, conn: Connection, now: float) -> None:
    if conn.ack_pending and conn.state not in (S.CLOSED, S.LISTEN, S.SYN_SENT):
        cx.counters["delayed_acks"] += 1
        delack.delayed_ack_fired(conn)
        snd.send_ack(cx, conn)


def on_keepalive(cx: Context, conn: Connection, now: float) -> None:
    """Linux tcp_keepalive_timer: probe after keepidle of silence, every keepintvl, give up after keepcnt."""
    if not conn.so_keepalive or conn.state in (S.CLOSED, S.LISTEN, S.SYN_SENT, S.SYN_RCVD, S.TIME_WAIT):
        return
    idle_limit = cx.keepalive_idle(conn)
    interval = conn.tcp_keepintvl or cx.config.keepalive_interval
    if conn.snd_una != conn.snd_max or conn.send_buffer:
        cx.arm(conn, "keepalive", now + interval)   # the retransmission timer watches this peer
        return
    idle = now - conn.last_recv
    if idle + EPSILON < idle_limit:
        cx.arm(conn, "keepalive", conn.last_recv + idle_limit)
        return
    if conn.probes_out >= (conn.tcp_keepcnt or cx.config.keepalive_probes):
        cx.counters["keepalive_timeouts"] += 1
        snd.send_rst(cx, conn)
        cx.abort(conn, now, errno.ETIMEDOUT, "keepalive timeout")
        return
    conn.probes_out += 1
    cx.counters["keepalive_probes"] += 1
    snd.send_probe(cx, conn)
    cx.arm(conn, "keepalive", now + interval)


def fire(cx: Context, conn: Connection, kind: str, now: float) -> None:
    """The timer service says `kind` went off: run its handler if its deadline has come; if
    it was moved later, wait again; if it was stopped (lazily), ignore it."""
    conn.armed[kind] = None
    deadline = conn.timers[kind]
    if deadline is None:
        cx.count("timer_stale")
        return
    if deadline > now + EPSILON:
        conn.armed[kind] = deadline              # moved later (or fired early): wait again
        cx.effects.timers.append(((conn.id, kind), deadline))
        return
    conn.timers[kind] = None
    HANDLERS[kind](cx, conn, now)


HANDLERS = {
    "retransmit": on_retransmit,
    "connect": on_connect,
    "persist": on_persist,
    "fin_wait_2": on_fin_wait_2,
    "time_wait": on_time_wait,
    "delayed_ack": on_delayed_ack,
    "keepalive": on_keepalive,
}
