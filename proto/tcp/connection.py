"""The transmission control block: one connection (or listener, or bare socket), as plain data.

A socket id and a connection id are the same number: `socket()` makes a TCB in
CLOSED, and a listener's children get fresh ids that `accept()` hands out.
RFC 9293 variable names are kept where the RFC variable is meant
(snd_una = SND.UNA, rcv_nxt = RCV.NXT, ...).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from proto.tcp import seqnum
from proto.tcp.congestion import CongestionControl, NewReno
from proto.tcp.delack import AckState
from proto.tcp.rcvbuf import RecvBuffer
from proto.tcp.rtt import RttEstimator
from proto.tcp.sendbuf import SendBuffer
from proto.tcp.state import Recovery, State

TIMER_KINDS = ("retransmit", "connect", "persist", "fin_wait_2", "time_wait", "delayed_ack", "keepalive")

# BSD socket-layer state (Linux struct socket's SS_*)
SS_UNCONNECTED, SS_CONNECTING, SS_CONNECTED = "unconnected", "connecting", "connected"


# how far autotuning grows a send buffer the application did not size (Linux tcp_wmem[2])
SNDBUF_AUTOTUNE_MAX = 4 * 1024 * 1024


def _no_timers() -> dict[str, float | None]:
    return dict.fromkeys(TIMER_KINDS)


@dataclass(slots=True, eq=False)
class Connection:
    id: int
    state: State = State.CLOSED
    local_addr: str = "0.0.0.0"
    local_port: int = 0
    remote_addr: str = "0.0.0.0"
    remote_port: int = 0

    # --- the socket as the application sees it ---
    user_open: bool = True              # the application holds this id (False: orphan or unaccepted child)
    sock_state: str = SS_UNCONNECTED    # SS_* of the BSD socket layer
    bound: bool = False                 # holds local_port in the engine's port table
    port_explicit: bool = False         # bound by bind()/listen() (kept when the connection ends), Linux's userlock
    rcv_shutdown: bool = False          # Linux sk_shutdown & RCV_SHUTDOWN
    snd_shutdown: bool = False          # Linux sk_shutdown & SEND_SHUTDOWN
    done: bool = False                  # SOCK_DONE: the peer's FIN was received (recv returns b"")
    pending_error: int = 0              # sk_err: reported once by a call or SO_ERROR
    nospace: bool = False               # a writer found the send buffer full: wake it when room frees up
    # socket options
    so_reuseaddr: bool = False
    so_keepalive: bool = False
    so_linger: tuple[int, int] = (0, 0)
    so_rcvbuf: int = 262144
    so_sndbuf: int = 262144
    rcvbuf_locked: bool = False         # set by SO_RCVBUF: no autotuning (Linux SOCK_RCVBUF_LOCK)
    sndbuf_locked: bool = False         # set by SO_SNDBUF (Linux SOCK_SNDBUF_LOCK)
    tcp_nodelay: bool = False
    tcp_maxseg: int = 0                 # TCP_MAXSEG set by the user (0 = unset)
    tcp_keepidle: float = 0.0           # 0 = the config default
    tcp_keepintvl: float = 0.0
    tcp_keepcnt: int = 0

    # --- listener ---
    backlog: int = 0
    accept_queue: deque = field(default_factory=deque)   # child ids, ESTABLISHED (or later), not yet accepted
    syn_queue: set = field(default_factory=set)          # child ids in SYN_RCVD
    parent: int | None = None           # the listener of an unaccepted child
    queued: bool = False                # in the parent's accept queue
    cookie_sent_at: float | None = None  # a listener's last SYN cookie (Linux tcp_synq_overflow's stamp)

    # --- send sequence space (RFC 9293 3.3.1) ---
    iss: int = 0
    snd_una: int = 0                    # SND.UNA oldest unacknowledged
    snd_nxt: int = 0                    # SND.NXT next to send (moves back on a retransmission timeout)
    snd_max: int = 0                    # highest sequence number sent + 1
    snd_sml: int = 0                    # end of the last small segment sent (Minshall's Nagle)
    snd_wnd: int = 0                    # SND.WND in bytes (already scaled)
    snd_wl1: int = 0
    snd_wl2: int = 0
    max_snd_wnd: int = 0                # MAX.SND.WND (RFC 5961)
    snd_wscale: int = 0                 # the peer's shift, applied to the windows it advertises
    wscale_ok: bool = False             # both SYNs carried the window scale option
    sack_ok: bool = False               # both SYNs carried SACK-permitted: our ACKs report the out-of-order queue
    ts_ok: bool = False                 # both SYNs carried timestamps (RFC 7323): every segment carries them
    ts_recent: int = 0                  # TS.Recent: the peer's TSval to echo
    ts_offset: int | None = None        # added to our clock in TSval (per connection, RFC 7323 5.4)
    sack_high: int | None = None        # highest right edge of a SACK block the peer sent
    scoreboard: list = field(default_factory=list)      # SACKed [(start, end)] above snd_una, sorted (RFC 6675)
    rxt_marks: dict = field(default_factory=dict)      # SACK recovery: seq retransmitted -> snd_max then
    rack: object = None                 # RACK's state (rack.RackState) when SACK and tcp.rack are on
    reo_armed: bool = False             # the retransmission timer runs as RACK's reordering timer (RFC 8985 6.3)
    pto_armed: bool = False             # the retransmission timer runs as the tail loss probe timer (RFC 8985 7)
    high_rxt: int = 0                   # RFC 6675 HighRxt: end of the highest retransmission in SACK recovery
    send_mss: int = 536                 # effective send MSS
    peer_mss: int = 536
    send_buffer: SendBuffer = field(default_factory=SendBuffer)  # unacknowledged + unsent bytes
    send_buffer_seq: int = 0            # sequence number of send_buffer[0]
    fin_queued: bool = False            # our FIN follows the last byte of send_buffer
    active_open: bool = False
    # congestion control (congestion.py) and loss recovery (recovery.py)
    cwnd: int = 0
    ssthresh: int = 1 << 30
    cc: CongestionControl = field(default_factory=NewReno)
    recovery: Recovery = Recovery.OPEN
    dupacks: int = 0
    recover: int = 0                    # the recovery point: SND.MAX when recovery began (RFC 6582, 6675)
    recover_fs: int = 0                 # PRR (RFC 6937): FlightSize when recovery began
    prr_delivered: int = 0              # ... bytes delivered to the peer since
    prr_out: int = 0                    # ... bytes sent since
    # retransmission (RFC 6298)
    rtt: RttEstimator = field(default_factory=RttEstimator)
    retransmits: int = 0                # consecutive expiries without progress
    total_retransmits: int = 0
    probes_out: int = 0                 # unanswered persist / keepalive probes
    persist_backoff: int = 0

    # --- receive sequence space ---
    irs: int = 0
    rcv_nxt: int = 0                    # RCV.NXT
    rcv_adv: int = 0                    # right edge of the window we advertised (RCV.NXT + RCV.WND): never moves left
    rcv_wscale: int = 0                 # our shift
    rcv_mss: int = 536                  # estimate of the peer's full-sized segment
    recv_buffer: RecvBuffer = field(default_factory=RecvBuffer)  # unread in-order bytes + out-of-order queue
    fin_seq: int | None = None          # sequence number of a FIN seen beyond a hole
    ack_pending: bool = False           # an ACK is owed (delayed)
    ack_now: bool = False               # an ACK is owed at once
    acked_upto: int = 0                 # RCV.NXT as of the last ACK we sent
    acks: AckState = field(default_factory=AckState)    # quick ACKs, the delayed-ACK timeout (delack.py)
    last_recv: float = 0.0              # time of the last acceptable segment (keepalive idle)

    # --- timers: kind -> absolute deadline (None = not running); armed = what the timer service holds ---
    timers: dict = field(default_factory=_no_timers)
    armed: dict = field(default_factory=_no_timers)

    # ---- derived values ----
    @property
    def key(self) -> tuple[int, str, int]:
        return (self.local_port, self.remote_addr, self.remote_port)

    @property
    def in_recovery(self) -> bool:
        """In fast recovery (NewReno's or SACK's)."""
        return self.recovery is Recovery.FAST

    @property
    def flight_size(self) -> int:
        return seqnum.diff(self.snd_max, self.snd_una)

    @property
    def unsent(self) -> int:
        """Bytes of data in the send buffer not yet sent (at snd_nxt)."""
        return len(self.send_buffer) - seqnum.diff(self.snd_nxt, self.send_buffer_seq)

    @property
    def fin_seq_out(self) -> int:
        """Sequence number our FIN has (or will have)."""
        return seqnum.add(self.send_buffer_seq, len(self.send_buffer))

    @property
    def fin_acked(self) -> bool:
        return self.fin_queued and self.snd_una == seqnum.add(self.send_buffer_seq, len(self.send_buffer) + 1)

    @property
    def rcv_wnd(self) -> int:
        """The window currently offered to the peer (from the last advertisement)."""
        w = seqnum.diff(self.rcv_adv, self.rcv_nxt)
        return w if w > 0 else 0

    def as_dict(self) -> dict:
        """The control block as plain, JSON/msgpack-able data (queues summarised as lengths,
        the send buffer and queued bytes are not copied)."""
        out = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, (State, Recovery)):
                value = value.value
            elif isinstance(value, CongestionControl):
                value = value.name
            elif isinstance(value, AckState):
                value = {"quick": value.quick, "pingpong": value.pingpong, "ato": value.ato}
            elif isinstance(value, RttEstimator):
                value = {"srtt": value.srtt, "rttvar": value.rttvar, "rto": value.rto}
            elif isinstance(value, (bytearray, bytes, SendBuffer)):
                value = len(value)
            elif isinstance(value, RecvBuffer):
                value = {"unread": value.length, "ooo": [(seq, len(data)) for seq, data in value.ooo]}
            elif isinstance(value, deque):
                value = list(value)
            elif isinstance(value, set):
                value = sorted(value)
            elif name == "rack":
                value = None if value is None else {"sent": len(value.sent), "lost": len(value.lost),
                                                    "reord": value.reord, "min_rtt": value.min_rtt}
            elif name == "rxt_marks":
                value = len(value)
            elif name == "scoreboard":
                value = [list(r) for r in value]
            elif isinstance(value, list):
                value = [(seq, len(data)) for seq, data in value]
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, dict):
                value = dict(value)
            out[name] = value
        return out
