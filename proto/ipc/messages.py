"""Every message that crosses between processes, declared once.

A message travels as ZeroMQ frames: one small msgpack header, then its payload
bytes, each payload its own frame (never re-encoded, never copied into the
header).  The header is a msgpack array::

    [VERSION, op, field_1, field_2, ...]

with the fields in the order of the dataclass.  `proto.ipc.codec` encodes,
decodes and validates; a message that fails validation is a `MessageError`,
which the receiving service counts and logs.

Payload frames are listed in `payload` (a tuple of bytes-like objects); the
header says nothing of them except through its own fields (a batch of packets,
for example, is one header and N frames).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

VERSION = 1
MAX_INT = (1 << 63) - 1
MAX_NAME = 64            # service names, incarnations, ops
MAX_KEY_PARTS = 4        # a timer key: an int, a str, or a flat list of at most this many


# ---- the checks every declaration's `problem()` uses (nested shapes and ranges)
def is_int(value, lo: int = 0, hi: int = MAX_INT) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def is_name(value, longest: int = MAX_NAME) -> bool:
    return isinstance(value, str) and 0 < len(value) <= longest


def is_time(value) -> bool:
    """A CLOCK_MONOTONIC time or a duration: a finite number, not negative."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and 0 <= value < 1e15)


def is_timer_key(key) -> bool:
    if isinstance(key, list):
        return 0 < len(key) <= MAX_KEY_PARTS and all(
            is_int(part, -MAX_INT) or is_name(part) for part in key)
    return is_int(key, -MAX_INT) or is_name(key)


def are_addresses(addresses, frames: int) -> str | None:
    """[[src, dst], ...]: one pair of 4-byte addresses per payload frame."""
    if len(addresses) != frames:
        return f"{len(addresses)} address pairs for {frames} frames"
    for pair in addresses:
        if not (isinstance(pair, list) and len(pair) == 2 and all(
                isinstance(a, bytes) and len(a) == 4 for a in pair)):
            return "an address pair is not [4 bytes, 4 bytes]"
    return None


def are_indices(indices, frames: int) -> str | None:
    if len(indices) > frames or not all(is_int(i, 0, frames - 1) for i in indices):
        return "trusted lists a frame that is not there"
    return None


@dataclass(frozen=True, slots=True)
class Message:
    OP: ClassVar[str] = ""
    payload: tuple = field(default=(), kw_only=True)

    def problem(self) -> str | None:
        """What is wrong with the fields' nested shapes and ranges (None: nothing).  The codec
        has checked each field's top-level type; a handler may rely on both."""
        return None


# --- lifecycle ------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Hello(Message):
    """A service announces a new incarnation: `[1, "hello", service, incarnation, pid]`."""
    OP: ClassVar[str] = "hello"
    service: str
    incarnation: str
    pid: int

    def problem(self) -> str | None:
        if not (is_name(self.service) and is_name(self.incarnation) and is_int(self.pid, 0, 1 << 31)):
            return "service, incarnation or pid out of range"
        return None


# --- nicd <-> ipd: whole IP packets -----------------------------------------

@dataclass(frozen=True, slots=True)
class DeviceReceived(Message):
    """nicd -> ipd: packets read from the device, one frame each: `[1, "dev_rx", trusted]` + N frames.

    `trusted` lists the frames whose transport checksum the device vouches for (with checksum
    offload the kernel hands over CHECKSUM_PARTIAL packets: they never crossed a wire).
    """
    OP: ClassVar[str] = "dev_rx"
    trusted: list = field(default_factory=list)

    def problem(self) -> str | None:
        return are_indices(self.trusted, len(self.payload))


@dataclass(frozen=True, slots=True)
class DeviceTransmit(Message):
    """ipd -> nicd: packets to write to the device, one frame each: `[1, "dev_tx"]` + N frames."""
    OP: ClassVar[str] = "dev_tx"


# --- ipd <-> tcpd: TCP segments with their addresses ------------------------

@dataclass(frozen=True, slots=True)
class SegmentsReceived(Message):
    """ipd -> tcpd: `[1, "tcp_rx", [[src, dst], ...], trusted]` + one frame per segment.

    src and dst are 4-byte addresses; segment i travels in frame i.  `trusted` lists the
    segments whose checksum the device vouched for (tcpd does not verify them again).
    """
    OP: ClassVar[str] = "tcp_rx"
    addresses: list
    trusted: list = field(default_factory=list)

    def problem(self) -> str | None:
        return are_addresses(self.addresses, len(self.payload)) or are_indices(self.trusted, len(self.payload))


@dataclass(frozen=True, slots=True)
class SegmentsTransmit(Message):
    """tcpd -> ipd: `[1, "tcp_tx", [[src, dst], ...]]` + one frame per segment (checksummed)."""
    OP: ClassVar[str] = "tcp_tx"
    addresses: list

    def problem(self) -> str | None:
        return are_addresses(self.addresses, len(self.payload))


# --- owners <-> timerd ------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TimerSet(Message):
    """owner -> timerd: `[1, "timer_set", owner, [[key, deadline|None], ...]]`.

    Deadlines are absolute CLOCK_MONOTONIC seconds (one clock for every process
    of the machine); None cancels.  Arming an armed key moves it.
    """
    OP: ClassVar[str] = "timer_set"
    owner: str
    entries: list

    def problem(self) -> str | None:
        if not is_name(self.owner, 32):
            return "owner is not a name"
        for entry in self.entries:
            if not (isinstance(entry, list) and len(entry) == 2 and is_timer_key(entry[0])
                    and (entry[1] is None or is_time(entry[1]))):
                return "an entry is not [key, deadline or None]"
        return None


@dataclass(frozen=True, slots=True)
class TimerFired(Message):
    """timerd -> owner: `[1, "timer_fired", [[key, deadline], ...]]` (expired, in deadline order)."""
    OP: ClassVar[str] = "timer_fired"
    entries: list

    def problem(self) -> str | None:
        for entry in self.entries:
            if not (isinstance(entry, list) and len(entry) == 2 and is_timer_key(entry[0]) and is_time(entry[1])):
                return "an entry is not [key, deadline]"
        return None


# --- libsock <-> tcpd: the system calls -------------------------------------

@dataclass(frozen=True, slots=True)
class Call(Message):
    """libsock -> tcpd: `[1, "call", id, op, sid, args, timeout]` (+ a data frame for send).

    sid is `[incarnation, socket id]` so that a call never reaches a socket of
    another tcpd incarnation; timeout is the longest the call may block (None:
    forever, 0: non-blocking).  A channel's messages are numbered 1, 2, ... and
    tcpd handles each once, in order, across its own restarts (services/tcp/
    channels.py): a call waited for has its number as id, a posted call minus
    its number (0: an unnumbered posted call).  A posted call nobody waits for
    and tcpd does not answer: a send within the credit of the socket's last
    Reply (its data is queued whole) and close.  Calls from one libsock channel
    (one thread) arrive in order; op "fence" with args `[channel, count]` waits
    until tcpd has handled another channel's messages up to number `count`.  A posted
    "socket" names the new socket's id (NAMED_SOCKET_IDS and above).  A posted
    "cancel" with args `[id]` ends that call of the channel, asleep in tcpd, with
    EINTR (its caller was interrupted by a signal); a call already answered is
    not affected.
    """
    OP: ClassVar[str] = "call"
    id: int
    op: str
    sid: Any
    args: list
    timeout: Any

    def problem(self) -> str | None:
        # the rest (sid, args, timeout, data frame) is the call contract's (calls.py): answered
        # with an errno, which needs an id to answer
        if not (is_int(self.id, -MAX_INT) and is_name(self.op)):
            return "id or op out of range"
        return None


# socket ids a caller names itself (a posted socket() call); tcpd's own ids stay below
NAMED_SOCKET_IDS = 1 << 40


@dataclass(frozen=True, slots=True)
class Reply(Message):
    """tcpd -> libsock: `[1, "reply", id, errno, value, incarnation, credit, ready]` (+ a data frame for recv).

    errno 0 means success and `value` is the result.  `credit` is how many bytes
    libsock may now send on the call's socket without waiting for an answer
    (posted sends, see Call); 0 when every send must ask.  `ready` is
    `[version, poll mask]` of the call's socket when the calling process watches
    its readiness (see Readiness), else None.
    """
    OP: ClassVar[str] = "reply"
    id: int
    errno: int
    value: Any
    incarnation: str
    credit: int
    ready: Any = None

    def problem(self) -> str | None:
        if not (is_int(self.id) and is_int(self.errno, 0, 4095) and is_name(self.incarnation)
                and is_int(self.credit)):
            return "id, errno, incarnation or credit out of range"
        if self.ready is not None and not (isinstance(self.ready, list) and len(self.ready) == 2
                                           and all(is_int(v) for v in self.ready)):
            return "ready is not [version, poll mask]"
        return None


@dataclass(frozen=True, slots=True)
class Readiness(Message):
    """tcpd -> libsock's readiness channel: `[1, "ready", [[socket id, version, poll mask], ...]]`.

    A process that watches a socket (a posted Call "watch" with args `[channel]`, sent
    the first time the program asks for its fileno()) is told its Linux poll mask on
    that channel once at the watch and then whenever the mask gains a bit the process
    was not told of (data, EOF, a connection to accept, room to send, an error): one
    message per tcpd wake-up, never one per segment.  Lost bits travel only in the
    `ready` of the socket's next Reply.  Each process's versions of one socket count
    up; libsock applies a mask only if it is newer than the one it holds.
    """
    OP: ClassVar[str] = "ready"
    entries: list

    def problem(self) -> str | None:
        for entry in self.entries:
            if not (isinstance(entry, list) and len(entry) == 3 and all(is_int(v) for v in entry)):
                return "an entry is not [socket id, version, poll mask]"
        return None


# --- the netstack command <-> any service -----------------------------------

@dataclass(frozen=True, slots=True)
class Control(Message):
    """netstack -> service: `[1, "ctl", id, what, args]`; answered with a ControlReply."""
    OP: ClassVar[str] = "ctl"
    id: int
    what: str
    args: dict

    def problem(self) -> str | None:
        if not (is_int(self.id) and is_name(self.what) and self.what.isidentifier()
                and all(isinstance(k, str) and k.isidentifier() for k in self.args)):
            return "id, what or an argument's name out of range"
        return None


@dataclass(frozen=True, slots=True)
class ControlReply(Message):
    """service -> netstack: `[1, "ctl_reply", id, ok, value]`."""
    OP: ClassVar[str] = "ctl_reply"
    id: int
    ok: bool
    value: Any

    def problem(self) -> str | None:
        return None if is_int(self.id) else "id out of range"


ALL_MESSAGES: tuple[type[Message], ...] = (
    Hello, DeviceReceived, DeviceTransmit, SegmentsReceived, SegmentsTransmit,
    TimerSet, TimerFired, Call, Reply, Readiness, Control, ControlReply,
)


# --- ipd <-> udpd: UDP datagrams, and the ICMP errors about them ------------

@dataclass(frozen=True, slots=True)
class DatagramsReceived(Message):
    """ipd -> udpd: `[1, "udp_rx", [[src, dst, ip_header], ...], trusted, looped]` + one frame per datagram.

    ip_header is the datagram's IP header as it arrived (b"" for a looped one), for the quote of
    an ICMP port unreachable; `trusted` lists datagrams whose checksum the device vouched for,
    `looped` those that came back by loopback (never on a wire).
    """
    OP: ClassVar[str] = "udp_rx"
    addresses: list
    trusted: list = field(default_factory=list)
    looped: list = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class DatagramsTransmit(Message):
    """udpd -> ipd: `[1, "udp_tx", [[src, dst], ...]]` + one frame per UDP datagram (checksummed)."""
    OP: ClassVar[str] = "udp_tx"
    addresses: list


@dataclass(frozen=True, slots=True)
class PortUnreachable(Message):
    """udpd -> ipd: `[1, "udp_unreach", [quote, ...]]`: send ICMP port unreachable about each
    datagram (quote: its IP header and first 8 bytes), under ipd's rules and rate limit."""
    OP: ClassVar[str] = "udp_unreach"
    quotes: list


@dataclass(frozen=True, slots=True)
class IcmpErrorsReceived(Message):
    """ipd -> udpd: `[1, "udp_icmp", [[type, code, quote], ...]]`: ICMP errors about datagrams
    udpd sent (quote: the error's body, the offending IP header and 8 bytes)."""
    OP: ClassVar[str] = "udp_icmp"
    errors: list


# --- libsock <-> udpd: the system calls of a SOCK_DGRAM socket ---------------

@dataclass(frozen=True, slots=True)
class DatagramCall(Message):
    """libsock -> udpd: `[1, "udp_call", id, op, sid, args, timeout]` (+ a data frame for sendto).

    sid is the socket's id, named by libsock; timeout is the longest the call may
    block (None: forever, 0: non-blocking).  id 0 is posted (not answered: a sendto libsock
    knows will succeed, a close; a posted sendto leaves a pending error for the next call).  A sid
    udpd does not know answers ESTALE: udpd restarted, and libsock re-creates the
    socket from the state udpd last returned ("socket" with args `[state]`).
    """
    OP: ClassVar[str] = "udp_call"
    id: int
    op: str
    sid: int
    args: list
    timeout: Any


@dataclass(frozen=True, slots=True)
class DatagramReply(Message):
    """udpd -> libsock: `[1, "udp_reply", id, errno, value, incarnation, ready]` (+ a data frame for recv).

    `ready` is `[version, poll mask]` of the call's socket when the calling process watches it
    (a "watch" call naming the process's readiness channel, as with tcpd's Reply), else None;
    gains come unasked on that channel as `Readiness` messages.
    """
    OP: ClassVar[str] = "udp_reply"
    id: int
    errno: int
    value: Any
    incarnation: str
    ready: Any = None


ALL_MESSAGES += (DatagramsReceived, DatagramsTransmit, PortUnreachable, IcmpErrorsReceived,
                 DatagramCall, DatagramReply)
