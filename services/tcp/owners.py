"""Which processes hold each socket, so that a process's death closes what it held.

libsock names each of its ZeroMQ channels `p<pid>.<token>` (the routing id tcpd
sees with every call); every call adds the caller's pid to its socket's holders.
Once a second tcpd checks that the holders are alive: a socket whose every holder
has died is closed, as the kernel closes a dead process's descriptors (after
SIGKILL too), so a killed server's port is free again and its peers see FIN.
libsock and the stack must share a pid namespace.
"""
from __future__ import annotations

import re

from services.procs import pid_alive

SWEEP_EVERY = 1.0
_IDENTITY = re.compile(rb"p([0-9]{1,10})\.")
_CACHE_MAX = 10_000


class Owners:
    def __init__(self) -> None:
        self._holders: dict[int, set[int]] = {}     # socket id -> pids that called on it
        self._sockets_of: dict[int, int] = {}       # pid -> how many sockets it holds
        self._pid_of: dict[bytes, int | None] = {}  # routing id -> pid (None: not libsock's)
        self.next_sweep: float | None = None

    def __len__(self) -> int:
        return len(self._holders)

    def pid_of(self, identity: bytes) -> int | None:
        pid = self._pid_of.get(identity, -1)
        if pid == -1:
            if len(self._pid_of) >= _CACHE_MAX:
                self._pid_of.clear()
            found = _IDENTITY.match(identity)
            pid = self._pid_of[identity] = int(found.group(1)) if found else None
        return pid

    def note(self, now: float, sid: int, identity: bytes) -> None:
        """A call on `sid` came from `identity`: its process holds the socket."""
        pid = self.pid_of(identity)
        if pid is None:
            return
        holders = self._holders.get(sid)
        if holders is None:
            holders = self._holders[sid] = set()
            if self.next_sweep is None:
                self.next_sweep = now + SWEEP_EVERY
        if pid not in holders:
            holders.add(pid)
            self._sockets_of[pid] = self._sockets_of.get(pid, 0) + 1

    def forget(self, sid: int) -> None:
        """The socket was closed."""
        for pid in self._holders.pop(sid, ()):
            left = self._sockets_of[pid] - 1
            if left:
                self._sockets_of[pid] = left
            else:
                del self._sockets_of[pid]

    def orphans(self, now: float) -> list[int]:
        """The sockets whose every holder has died (forgotten here; the caller closes them)."""
        dead = {pid for pid in self._sockets_of if not pid_alive(pid)}
        found = []
        if dead:
            for sid, holders in list(self._holders.items()):
                if holders <= dead:
                    found.append(sid)
                    self.forget(sid)
            for pid in dead:                      # holders of sockets others still hold
                if pid in self._sockets_of:
                    for holders in self._holders.values():
                        holders.discard(pid)
                    del self._sockets_of[pid]
        self.next_sweep = now + SWEEP_EVERY if self._holders else None
        return found
