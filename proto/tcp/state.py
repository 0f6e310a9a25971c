"""TCP states (RFC 9293 section 3.3.2) and the transition table, in one place; and the
sender's loss recovery state.

The engine changes a connection's state only through `TcpEngine.set_state`,
which checks the move against `TRANSITIONS` and records a `Transition`.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass


class State(enum.Enum):
    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN_SENT"
    SYN_RCVD = "SYN_RCVD"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN_WAIT_1"
    FIN_WAIT_2 = "FIN_WAIT_2"
    CLOSING = "CLOSING"
    TIME_WAIT = "TIME_WAIT"
    CLOSE_WAIT = "CLOSE_WAIT"
    LAST_ACK = "LAST_ACK"


S = State


class Recovery(enum.Enum):
    """Where the sender stands with loss (Linux's tcp_ca_state, less Disorder and CWR)."""
    OPEN = "open"        # no loss suspected
    FAST = "fast"        # fast recovery: NewReno's (RFC 6582) or SACK's (RFC 6675), until SND.UNA >= recover
    LOSS = "loss"        # after a retransmission timeout, go-back-N until SND.UNA >= recover

# (from, to) -> the events that cause it.  Moves to CLOSED (reset, abort,
# timeout, close of a listener) are allowed from every state.
TRANSITIONS: dict[tuple[State, State], str] = {
    (S.CLOSED, S.LISTEN): "passive open (listen)",
    (S.CLOSED, S.SYN_SENT): "active open (connect) / SYN",
    (S.LISTEN, S.SYN_RCVD): "SYN / SYN+ACK (new child connection)",
    (S.SYN_SENT, S.SYN_RCVD): "SYN (simultaneous open) / SYN+ACK",
    (S.SYN_SENT, S.ESTABLISHED): "SYN+ACK / ACK",
    (S.SYN_RCVD, S.ESTABLISHED): "ACK",
    (S.SYN_RCVD, S.FIN_WAIT_1): "close / FIN",
    (S.ESTABLISHED, S.FIN_WAIT_1): "close / FIN (active close)",
    (S.ESTABLISHED, S.CLOSE_WAIT): "FIN / ACK (passive close)",
    (S.CLOSE_WAIT, S.LAST_ACK): "close / FIN",
    (S.LAST_ACK, S.CLOSED): "ACK of FIN",
    (S.FIN_WAIT_1, S.FIN_WAIT_2): "ACK of FIN",
    (S.FIN_WAIT_1, S.CLOSING): "FIN / ACK (simultaneous close)",
    (S.FIN_WAIT_1, S.TIME_WAIT): "FIN+ACK / ACK",
    (S.FIN_WAIT_2, S.TIME_WAIT): "FIN / ACK",
    (S.CLOSING, S.TIME_WAIT): "ACK of FIN",
    (S.TIME_WAIT, S.CLOSED): "2MSL timeout",
}

SYNCHRONIZED = frozenset({S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT,
                          S.CLOSING, S.LAST_ACK, S.TIME_WAIT})
# States in which the connection may still send data or its FIN.
SENDING = frozenset({S.ESTABLISHED, S.CLOSE_WAIT, S.FIN_WAIT_1, S.CLOSING, S.LAST_ACK})
# States in which data from the peer is still accepted (no FIN received yet).
RECEIVING = frozenset({S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2})


def allowed(old: State, new: State) -> bool:
    return new is S.CLOSED or (old, new) in TRANSITIONS


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change, as `netstack trace` shows it."""
    time: float
    conn_id: int
    local: tuple[str, int]
    remote: tuple[str, int]
    from_state: State
    to_state: State
    cause: str
