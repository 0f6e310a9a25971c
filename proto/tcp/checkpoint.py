"""A connection as a record that outlives tcpd, and the connection made again from it.

tcpd's store (services/tcp/store.py) keeps, for every socket, the last full
control block written (`snapshot`) and the two byte streams beside it: what
the application handed to `send` and what arrived in order from the peer.  A
control block is written when the connection's structure changes (a
transition, a socket call that changes it) and at least once a second while it
moves; between two, only the streams grow.  `restore` builds the connection
from the last block and the streams' ends, and makes good what a block a
little old cannot know:

- RCV.NXT is where the received stream ends (every byte acknowledged to the
  peer was in the store before the ACK left); the unread bytes are the
  stream from what the application was answered.
- SND.UNA may be older than the peer's last ACK: the bytes from there are in
  the store, so everything from it is treated as in flight (SND.MAX the end of
  the queue) and the retransmission timer fires at once, as after an RTO.  The
  peer's first ACK moves SND.UNA to where it really was; what went twice is an
  ordinary retransmission.
- What is kept only in memory goes: the out-of-order queue (the peer
  retransmits what it thinks SACKed once the retransmission timer finds it
  missing, RFC 2018 reneging) and the SACK scoreboard.

Pure: no I/O; the store reads and writes the records.
"""
from __future__ import annotations

from collections import deque
from operator import attrgetter

from proto.tcp import seqnum
from proto.tcp.congestion import Cubic, HyStart, NewReno
from proto.tcp.connection import Connection
from proto.tcp.delack import AckState
from proto.tcp.rack import RackState
from proto.tcp.rcvbuf import RecvBuffer
from proto.tcp.rtt import RttEstimator
from proto.tcp.sendbuf import SendBuffer
from proto.tcp.state import Recovery, State

S = State
# kept beside the block instead of in it: the streams are stored apart, the rest is rebuilt
_APART = {"send_buffer", "recv_buffer"}
SYNCHRONIZED = {S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT, S.CLOSING, S.LAST_ACK, S.TIME_WAIT}


# the objects a control block holds, written as (tag, their slots' values): pickle's generic
# way for a slotted object (__reduce_ex__, copyreg) made a block cost 80-100 us, this ~20
_OBJECTS = {cls.__name__: cls for cls in (RttEstimator, AckState, NewReno, Cubic, HyStart)}
_ENUMS = {"State": State, "Recovery": Recovery}


def _slots(cls) -> tuple:
    return tuple(name for klass in reversed(cls.__mro__) for name in getattr(klass, "__slots__", ()))


_SLOTS = {name: _slots(cls) for name, cls in _OBJECTS.items()}


def _flat(value):
    cls = type(value)
    name = cls.__name__
    if name in _SLOTS and _OBJECTS[name] is cls:
        return ("@", name, tuple(_flat(getattr(value, slot)) for slot in _SLOTS[name]))
    if name in _ENUMS and _ENUMS[name] is cls:
        return ("#", name, value.value)
    if cls is deque:
        return ("d", list(value))
    return value


def _unflat(value):
    if type(value) is not tuple:
        return value
    tag, *rest = value
    if tag == "@":
        name, values = rest
        obj = _OBJECTS[name].__new__(_OBJECTS[name])
        for slot, item in zip(_SLOTS[name], values):
            setattr(obj, slot, _unflat(item))
        return obj
    if tag == "#":
        return _ENUMS[rest[0]](rest[1])
    return deque(rest[0])               # "d"


# fields written flattened (_flat / _unflat); the rest are plain values pickle does quickly
_FLATTENED = ("state", "recovery", "cc", "rtt", "acks", "accept_queue")
# RACK's record of transmissions is memory's alone (as the scoreboard): only whether RACK is on
_PLAIN = tuple(name for name in Connection.__slots__
               if name not in _APART and name not in _FLATTENED and name != "rack")
_plain_values = attrgetter(*_PLAIN)


def snapshot(conn: Connection) -> dict:
    """The control block as plain values (a tuple in the slots' order: half the cost of a
    dict to pickle), the queues' bytes left out: in their place the streams' lengths at this
    moment, which `restore` measures the streams by."""
    rb = conn.recv_buffer
    return {"plain": _plain_values(conn), "flat": tuple(_flat(getattr(conn, name)) for name in _FLATTENED),
            "_rcv": (rb.total, rb.space_copied, rb.space_time), "_snd": (conn.send_buffer.total, len(conn.send_buffer)),
            "rack": conn.rack is not None}


def send_stream_start(block: dict) -> int:
    """Where in the send stream the queue of this block begins (its first unacknowledged byte)."""
    total, length = block["_snd"]
    return total - length


def restore(block: dict, unsent_and_unacked: bytes, snd_total: int, unread: bytes, rcv_total: int,
            read_total: int, now: float) -> Connection:
    """The connection again: `block` from `snapshot`, the send stream from the block's queue
    start to its end (`snd_total`), the received stream's unread part (from `read_total` to
    `rcv_total`)."""
    values = dict(zip(_PLAIN, block["plain"]))
    values.update((name, _unflat(value)) for name, value in zip(_FLATTENED, block["flat"]))
    conn = Connection(values.pop("id"))
    for name, value in values.items():
        setattr(conn, name, value)

    send = SendBuffer()
    send.append(unsent_and_unacked)
    send.total = snd_total
    conn.send_buffer = send

    block_rcv_total, space_copied, space_time = block["_rcv"]
    recv = RecvBuffer()
    if unread:
        recv.append(unread)
    recv.total, recv.total_read = rcv_total, read_total
    recv.space_copied, recv.space_time = space_copied, space_time
    conn.recv_buffer = recv
    if rcv_total > block_rcv_total:          # bytes acknowledged since the block was written
        conn.rcv_nxt = seqnum.add(conn.rcv_nxt, rcv_total - block_rcv_total)
        conn.acked_upto = conn.rcv_nxt
        conn.rcv_adv = conn.rcv_nxt if seqnum.lt(conn.rcv_adv, conn.rcv_nxt) else conn.rcv_adv
    conn.fin_seq = None                      # a FIN beyond a hole was in the out-of-order queue

    # what only memory held: the scoreboard, recovery's marks, the ACK owed
    conn.scoreboard, conn.rxt_marks, conn.sack_high = [], {}, None
    conn.recovery, conn.dupacks, conn.pto_armed, conn.reo_armed = Recovery.OPEN, 0, False, False
    conn.rack = RackState() if block.get("rack") else None
    conn.ack_pending = conn.ack_now = False
    conn.armed = dict(conn.timers)
    if conn.state in SYNCHRONIZED or conn.state is S.SYN_RCVD:
        end = seqnum.add(conn.send_buffer_seq, len(send) + (1 if conn.fin_queued else 0))
        if seqnum.lt(conn.snd_max, end):
            conn.snd_max = end               # all of it may have been sent: its ACK is acceptable
        conn.snd_nxt = conn.snd_una
        conn.high_rxt = conn.snd_una
        if conn.snd_una != conn.snd_max and conn.state is not S.TIME_WAIT:
            conn.timers["retransmit"] = now  # from SND.UNA again, as after a timeout
            conn.armed["retransmit"] = None
    return conn
