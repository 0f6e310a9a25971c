"""udpd: UDP's shell.  Datagrams and ICMP errors from ipd and calls from libsock
go into the pure engine (proto/udp/engine.py); its datagrams and port
unreachable requests go to ipd, and the calls it can now answer are answered.

A receive that finds nothing queued is parked here until a datagram (or an
error) wakes its socket, or its timeout passes, or its caller withdraws it.
udpd keeps no state that must survive it: libsock holds each socket's state
as udpd last returned it, and re-creates the socket in a new incarnation
(a call on a socket udpd does not know answers ESTALE).  A socket whose every
process has died is closed within OWNER_CHECK seconds, as the kernel closes a
dead process's descriptors.

A process that asks a socket for its fileno() watches its readiness as with
tcpd (services/readiness.py, libsock/_readiness.py): each answer carries the
socket's poll mask (Linux's udp_poll), and a datagram or an ICMP error that
gives it a bit its watcher was not told of is told on the process's readiness
channel.  Versions count from this incarnation's number, so what a new udpd
tells is newer than anything the dead one did.
"""
from __future__ import annotations

import errno
import heapq
import os
import time
from dataclasses import dataclass

from proto.config import parse_port_range
from proto.ipc.calls import CallError
from proto.ipc.udp_calls import check
from proto.ipc.messages import (DatagramCall, DatagramReply, DatagramsReceived, DatagramsTransmit,
                                IcmpErrorsReceived, PortUnreachable, Readiness)
from proto.udp.engine import UdpConfig, UdpEngine, UdpError
from proto.wire.icmp import IcmpParseError, parse_quoted_datagram
from proto.wire.ipv4 import addr_to_str, str_to_addr
from proto.wire.udp import udp_ports
from services._shell import Service, main
from services.procs import parent_of, pid_alive
from services.access import PRIVILEGED_PORTS, identity_pid
from services.readiness import Readiness as ReadinessWatches

OWNER_CHECK = 1.0


@dataclass
class Parked:
    identity: bytes
    id: int
    sid: int
    args: list
    deadline: float | None


class Udpd(Service):
    name = "udpd"
    public_ops = frozenset({"udp_call"})        # applications' calls, at RUN/public/udpd.sock

    def __init__(self, run_dir: str):
        super().__init__(run_dir)
        instance, udp = self.config["instance"], self.config.get("udp", {})
        self.engine = UdpEngine(UdpConfig(
            address=str_to_addr(instance["addr"]), prefix=instance.get("prefix", 24),
            # one local port range for TCP and UDP, as Linux's ip_local_port_range
            ephemeral_ports=parse_port_range(self.config["tcp"]["ephemeral_ports"]),
            **{key: udp[key] for key in ("rcvbuf", "sndbuf") if key in udp}))
        self.parked: dict[int, list[Parked]] = {}
        self.deadlines: list[tuple[float, int, Parked]] = []       # heap of parked calls with a timeout
        self.owners: dict[int, set[int]] = {}                      # sid -> pids that used it
        self.readiness = ReadinessWatches(epoch=self.starts)
        self.next_owner_check = time.monotonic() + OWNER_CHECK
        self.handlers.update(udp_rx=self.on_datagrams, udp_icmp=self.on_icmp_errors, udp_call=self.on_call)
        self.calls = {"socket": self._socket, "bind": self._bind, "connect": self._connect,
                      "sendto": self._sendto, "recv": self._recv, "setsockopt": self._setsockopt,
                      "getsockopt": self._getsockopt, "close": self._close, "cancel": self._cancel,
                      "hello": self._hello, "watch": self._watch}
        self.counters.update(in_bytes=0, out_bytes=0, bad_calls=0)
        self.peer("ipd")

    # -- from ipd ---------------------------------------------------------------

    def on_datagrams(self, identity: bytes, msg: DatagramsReceived) -> None:
        if len(msg.addresses) != len(msg.payload):
            self.count("ipc_bad_datagram_count")
            return
        trusted, looped = set(msg.trusted), set(msg.looped)
        datagram_in = self.engine.datagram_in
        for i, (entry, data) in enumerate(zip(msg.addresses, msg.payload)):
            try:
                src, dst, header = entry
                self.counters["in_bytes"] += len(data)
                datagram_in(bytes(src), bytes(dst), data, i not in trusted, i in looped, header)
            except (TypeError, ValueError):
                self.count("ipc_bad_datagram")
        self.flush()

    def on_icmp_errors(self, identity: bytes, msg: IcmpErrorsReceived) -> None:
        for entry in msg.errors:
            try:
                icmp_type, code, quote = entry
                quoted = parse_quoted_datagram(quote)
                src_port, dst_port = udp_ports(quoted.transport_head)
            except (TypeError, ValueError, IndexError, IcmpParseError):
                self.count("ipc_bad_icmp_error")
                continue
            self.engine.icmp_error_in(icmp_type, code, quoted.src, quoted.dst, src_port, dst_port)
        self.flush()

    def flush(self) -> None:
        effects = self.engine.take_effects()
        if effects.datagrams:
            self.counters["out_bytes"] += sum(len(d) for *_, d in effects.datagrams)
            self.send("ipd", DatagramsTransmit([[src, dst] for src, dst, _ in effects.datagrams],
                                               payload=tuple(d for *_, d in effects.datagrams)))
        if effects.unreachable:
            self.send("ipd", PortUnreachable(effects.unreachable))
        for sid in effects.woken:
            waiting = self.parked.pop(sid, None)
            if waiting:
                for parked in waiting:
                    self._answer_recv(parked)
        if effects.woken and self.readiness:
            for channel, entries in self.readiness.gained(effects.woken, self.engine.poll_mask).items():
                self.reply(channel, Readiness(entries))

    # -- from libsock -------------------------------------------------------------

    def on_call(self, identity: bytes, msg: DatagramCall) -> None:
        try:
            check(msg)
        except CallError as exc:
            self.counters["bad_calls"] += 1
            self._reply(identity, msg.id, exc.errno)
            return
        handler = self.calls[msg.op]
        if msg.op == "hello":                    # a readiness channel: no socket
            handler(identity, msg)
            return
        pid = identity_pid(identity)
        owners = self.owners.get(msg.sid)
        if pid and owners is not None and pid not in owners and parent_of(pid) not in owners:
            self.count("ebadf_not_owner")        # another process's socket (tcpd's owners.py)
            self._reply(identity, msg.id, errno.EBADF)
            return
        if pid and msg.op != "close":
            self.owners.setdefault(msg.sid, set()).add(pid)
        try:
            handler(identity, msg)
        except UdpError as exc:
            self._reply(identity, msg.id, exc.errno, sid=msg.sid)
        except (TypeError, ValueError, IndexError):     # malformed arguments: an errno, never a crash
            self.counters["bad_calls"] += 1
            self._reply(identity, msg.id, errno.EINVAL)
        self.flush()

    def _reply(self, identity: bytes, request_id: int, code: int = 0, value=None, data=None,
               sid: int | None = None) -> None:
        """Answer a call (a posted one, id 0, is not answered); with the socket's readiness
        when the caller watches `sid` (a recv that emptied the queue leaves it unreadable)."""
        if request_id:
            ready = None if sid is None else self.readiness.stamp(sid, identity_pid(identity),
                                                                   self.engine.poll_mask)
            self.reply(identity, DatagramReply(request_id, code, value, self.incarnation, ready,
                                               payload=(data,) if data is not None else ()))

    def _socket(self, identity: bytes, msg: DatagramCall) -> None:
        state = msg.args[0] if msg.args else None
        self._reply(identity, msg.id, value=self.engine.open(msg.sid, state).state(), sid=msg.sid)

    def _bind(self, identity: bytes, msg: DatagramCall) -> None:
        host, port = msg.args
        if isinstance(port, int) and 0 < port < PRIVILEGED_PORTS and self.caller.uid != 0:
            raise UdpError(errno.EACCES)           # as Linux's ip_unprivileged_port_start
        self._reply(identity, msg.id, value=self.engine.bind(msg.sid, str_to_addr(host), port), sid=msg.sid)

    def _connect(self, identity: bytes, msg: DatagramCall) -> None:
        host, port = msg.args
        addr = None if host is None else str_to_addr(host)
        self._reply(identity, msg.id, value=self.engine.connect(msg.sid, addr, port), sid=msg.sid)

    def _sendto(self, identity: bytes, msg: DatagramCall) -> None:
        host, port = msg.args
        addr = None if host is None else str_to_addr(host)
        if msg.id == 0:      # posted: its errors are counted (the datagram is lost, as UDP may lose it)
            try:
                self.engine.sendto(msg.sid, addr, port, msg.payload[0], posted=True)
            except UdpError:
                self.count("posted_send_errors")
            return
        sent, state = self.engine.sendto(msg.sid, addr, port, msg.payload[0])
        self._reply(identity, msg.id, value=[sent, state], sid=msg.sid)

    def _recv(self, identity: bytes, msg: DatagramCall) -> None:
        bufsize, peek = msg.args
        if msg.sid not in self.engine.sockets:
            raise UdpError(errno.ESTALE)
        timeout = msg.timeout
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        parked = Parked(identity, msg.id, msg.sid, [bufsize, peek], deadline)
        if self.engine.readable(msg.sid) or timeout == 0:
            self._answer_recv(parked)
            return
        self.parked.setdefault(msg.sid, []).append(parked)
        if deadline is not None:
            heapq.heappush(self.deadlines, (deadline, id(parked), parked))

    def _answer_recv(self, parked: Parked) -> None:
        if parked.sid not in self.engine.sockets:
            self._reply(parked.identity, parked.id, errno.EBADF)     # closed while it slept
            return
        try:
            src, src_port, data, length = self.engine.recv(parked.sid, *parked.args)
        except UdpError as exc:
            if exc.errno == errno.EAGAIN and (parked.deadline is None or parked.deadline > time.monotonic()):
                self.parked.setdefault(parked.sid, []).append(parked)      # someone else took it: sleep on
                return
            self._reply(parked.identity, parked.id, exc.errno, sid=parked.sid)
            return
        parked.deadline = -1.0        # answered (its heap entry is stale)
        self._reply(parked.identity, parked.id, value=[addr_to_str(src), src_port, length], data=data,
                    sid=parked.sid)

    def _setsockopt(self, identity: bytes, msg: DatagramCall) -> None:
        level, name, value = msg.args
        self._reply(identity, msg.id, value=self.engine.setsockopt(msg.sid, level, name, value), sid=msg.sid)

    def _getsockopt(self, identity: bytes, msg: DatagramCall) -> None:
        level, name = msg.args
        self._reply(identity, msg.id, value=self.engine.getsockopt(msg.sid, level, name), sid=msg.sid)

    def refuse(self, identity: bytes, msg, err: int) -> None:
        if isinstance(msg, DatagramCall) and isinstance(msg.id, int):
            self._reply(identity, msg.id, err)

    def _close(self, identity: bytes, msg: DatagramCall) -> None:
        self.engine.close(msg.sid)
        self.owners.pop(msg.sid, None)
        self.readiness.forget(msg.sid)
        self._reply(identity, msg.id)

    def _hello(self, identity: bytes, msg: DatagramCall) -> None:
        """A process's readiness channel announces itself: answered, so that it knows udpd can
        reach it, and every socket it watches is told again (a gain sent while it was
        reconnecting, after a restart of udpd, was dropped by the ROUTER)."""
        self._reply(identity, msg.id)
        entries = self.readiness.retell(identity, self.engine.poll_mask)
        if entries:
            self.reply(identity, Readiness(entries))

    def _watch(self, identity: bytes, msg: DatagramCall) -> None:
        """The calling process watches the socket through the readiness channel in args."""
        channel, = msg.args
        if msg.sid not in self.engine.sockets:
            raise UdpError(errno.ESTALE)
        if not self.readiness.watch_call(msg.sid, identity_pid(identity), channel):
            raise UdpError(errno.EINVAL)
        self.count("watches")
        self._reply(identity, msg.id, sid=msg.sid)

    def _cancel(self, identity: bytes, msg: DatagramCall) -> None:
        """A blocked receive whose caller was interrupted by a signal: ended with EINTR."""
        [request_id] = msg.args
        for parked in self.parked.get(msg.sid, []):
            if parked.identity == identity and parked.id == request_id:
                self.parked[msg.sid].remove(parked)
                parked.deadline = -1.0
                self._reply(identity, request_id, errno.EINTR, sid=msg.sid)
                return

    # -- time ---------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        while self.deadlines and self.deadlines[0][2].deadline != self.deadlines[0][0]:
            heapq.heappop(self.deadlines)           # answered or withdrawn
        deadline = self.deadlines[0][0] if self.deadlines else None
        if self.owners:
            deadline = self.next_owner_check if deadline is None else min(deadline, self.next_owner_check)
        return deadline

    def tick(self, now: float) -> None:
        while self.deadlines and self.deadlines[0][0] <= now:
            deadline, _, parked = heapq.heappop(self.deadlines)
            if parked.deadline != deadline:
                continue
            waiting = self.parked.get(parked.sid, [])
            if parked in waiting:
                waiting.remove(parked)
            parked.deadline = -1.0
            self._reply(parked.identity, parked.id, errno.EAGAIN, sid=parked.sid)
        if now >= self.next_owner_check:
            self.next_owner_check = now + OWNER_CHECK
            dead = [sid for sid, pids in self.owners.items() if not any(map(pid_alive, pids))]
            for sid in dead:
                self.engine.close(sid)
                self.readiness.forget(sid)
                del self.owners[sid]
            if dead:
                self.count("closed_for_dead_owner", len(dead))
                self.flush()

    # -- control ------------------------------------------------------------------

    def control_stats(self) -> dict:
        return {**self.counters, **self.engine.counters, "sockets": len(self.engine.sockets)}

    def control_ss(self) -> list:
        return self.engine.listing()


if __name__ == "__main__":
    main(Udpd)
