"""Which processes hold each socket, so that a process's death closes what it held.

libsock names each of its ZeroMQ channels `p<pid>.<token>` (the routing id tcpd
sees with every call; the shell has checked that pid against the kernel's
credentials of the channel, services/access.py).  A socket belongs to the
processes that hold it: the one that made it (socket, accept) and those it was
handed to by fork.  A call from any other process answers EBADF, as an fd
number the process does not have (`claim`).
Once a second tcpd checks that the holders are alive: a socket whose every holder
has died is closed, as the kernel closes a dead process's descriptors (after
SIGKILL too), so a killed server's port is free again and its peers see FIN.
libsock and the stack must share a pid namespace.

A fork hands the parent's sockets to the child, as the kernel shares descriptors.
libsock tells tcpd just before (`promise`); for a moment after, a close from the
parent waits (`hold_close`): if the child uses the socket meanwhile, the parent's
close only lets go of its own hold and the child keeps the connection (a forking
server: the parent accepts, forks, closes; the child serves).  If no child does,
the close happens when the moment ends.

Which process is the child: the parent's `fork` carries a secret (a random
token) that only a process forked from it has in its memory; the child's first
message is `inherit` with it, and it holds the parent's sockets if the kernel
says its parent (/proc/<pid>/stat) is the process that forked.  A program the
parent merely starts (subprocess: fork and exec, with Python's sockets closed on
exec) has no token and gets EBADF, as it would have no descriptor.
"""
from __future__ import annotations

import re

from collections import OrderedDict

from services.procs import parent_of, pid_alive

SWEEP_EVERY = 1.0
CLAIM_WITHIN = 1.0          # how long after a fork a close from the parent waits for the child
_IDENTITY = re.compile(rb"p([0-9]{1,10})\.")
_CACHE_MAX = 10_000
FORKS_KEPT = 10_000         # the newest forks whose children may still claim their copies


class Owners:
    def __init__(self) -> None:
        self._holders: dict[int, set[int]] = {}     # socket id -> pids that called on it
        self._sockets_of: dict[int, int] = {}       # pid -> how many sockets it holds
        self._uid_of: dict[int, int] = {}           # pid -> its uid (for netstack ss)
        self._pid_of: dict[bytes, int | None] = {}  # routing id -> pid (None: not libsock's)
        # socket id -> [until when a forked child may take it, the forking pid, whether a child did]
        self._promised: dict[int, list] = {}
        self._held_closes: dict[int, int] = {}      # socket id -> pid whose close waits for that
        self._forks: OrderedDict[str, tuple[int, list]] = OrderedDict()  # token -> (forking pid, sids)
        self.next_sweep: float | None = None

    def __len__(self) -> int:
        return len(self._holders)

    def count(self, pid: int) -> int:
        """How many sockets the process holds."""
        return self._sockets_of.get(pid, 0)

    def pid_of(self, identity: bytes) -> int | None:
        pid = self._pid_of.get(identity, -1)
        if pid == -1:
            if len(self._pid_of) >= _CACHE_MAX:
                self._pid_of.clear()
            found = _IDENTITY.match(identity)
            pid = self._pid_of[identity] = int(found.group(1)) if found else None
        return pid

    def claim(self, sid: int, identity: bytes) -> bool:
        """May a call on `sid` come from `identity`: does its process hold the socket?  A call
        not from libsock (root's tools on the service's own endpoint) may."""
        pid = self.pid_of(identity)
        if pid is None:
            return True
        holders = self._holders.get(sid)
        return holders is not None and pid in holders

    def inherit(self, now: float, identity: bytes, token: str, uid: int | None = None) -> int:
        """A forked child's first message: it holds the sockets its parent forked with, if the
        token is that fork's and the kernel says the parent forked it.  How many it took."""
        fork = self._forks.get(token)
        pid = self.pid_of(identity)
        if fork is None or pid is None or parent_of(pid) != fork[0]:
            return 0
        taken = 0
        for sid in fork[1]:
            if sid in self._holders:
                self.note(now, sid, identity, uid)
                taken += 1
        return taken

    def uid_of(self, identity: bytes) -> int | None:
        """The uid of a process that holds sockets (accept's caller: a parked call's)."""
        return self._uid_of.get(self.pid_of(identity))

    def owners_of(self, sid: int) -> list[list[int]]:
        """[[pid, uid], ...]: who holds the socket (netstack ss)."""
        return [[pid, self._uid_of.get(pid, -1)] for pid in sorted(self._holders.get(sid, ()))]

    def note(self, now: float, sid: int, identity: bytes, uid: int | None = None) -> None:
        """A call on `sid` came from `identity`: its process holds the socket."""
        pid = self.pid_of(identity)
        if pid is None:
            return
        if uid is not None:
            self._uid_of[pid] = uid
        holders = self._holders.get(sid)
        if holders is None:
            holders = self._holders[sid] = set()
            if self.next_sweep is None:
                self.next_sweep = now + SWEEP_EVERY
        if pid not in holders:
            holders.add(pid)
            self._sockets_of[pid] = self._sockets_of.get(pid, 0) + 1
            promise = self._promised.get(sid)
            if promise is not None and pid != promise[1]:            # a forked child takes its copy
                promise[2] = True
                closer = self._held_closes.pop(sid, None)
                if closer is not None:                              # the parent's close: its hold only
                    self._let_go(sid, closer)

    def _let_go(self, sid: int, pid: int | None) -> None:
        holders = self._holders.get(sid)
        if holders is not None and pid in holders:
            holders.discard(pid)
            self._drop_count(pid)

    def promise(self, now: float, identity: bytes, sids, token: str) -> None:
        """The caller forks: a close of these sockets from it waits CLAIM_WITHIN for the child,
        which may claim them with `token` (inherit)."""
        deadline, parent = now + CLAIM_WITHIN, self.pid_of(identity)
        own = [sid for sid in sids if isinstance(sid, int) and parent in self._holders.get(sid, ())]
        if parent is not None and own:
            self._forks[token] = (parent, own)
            while len(self._forks) > FORKS_KEPT:
                self._forks.popitem(last=False)
        for sid in sids:
            holders = self._holders.get(sid) if isinstance(sid, int) else None
            if holders is not None and parent in holders:      # (its own only; a child whose
                # call came first has taken it already)
                self._promised[sid] = [deadline, parent, bool(holders - {parent})]
        if self._promised and (self.next_sweep is None or deadline < self.next_sweep):
            self.next_sweep = deadline

    def hold_close(self, now: float, sid: int, identity: bytes) -> bool:
        """close() of a connection just handed to a forked child: True if the socket stays open,
        the caller's hold let go (a child has taken it) or its close waiting for the child."""
        promise = self._promised.get(sid)
        pid = self.pid_of(identity)
        if promise is None or promise[0] <= now or pid is None:
            return False
        if promise[2]:
            self._let_go(sid, pid)
            return bool(self._holders.get(sid))
        self._held_closes[sid] = pid
        return True

    def closes_due(self, now: float) -> list[int]:
        """Sockets whose held close is due: no child claimed them in time (the caller closes them)."""
        due = []
        for sid, (deadline, _, _) in list(self._promised.items()):
            if deadline <= now:
                del self._promised[sid]
                if self._held_closes.pop(sid, None) is not None:
                    due.append(sid)
        return due

    def holders(self, sid: int) -> tuple:
        """The pids holding `sid` (what tcpd's store keeps)."""
        return tuple(sorted(self._holders.get(sid, ())))

    def restore(self, now: float, sid: int, pids) -> None:
        """A socket's holders as a tcpd that died knew them (its store)."""
        for pid in pids:
            self.note(now, sid, b"p%d." % pid)

    def forget(self, sid: int) -> None:
        """The socket was closed."""
        self._promised.pop(sid, None)
        self._held_closes.pop(sid, None)
        for pid in self._holders.pop(sid, ()):
            self._drop_count(pid)

    def _drop_count(self, pid: int) -> None:
        left = self._sockets_of[pid] - 1
        if left:
            self._sockets_of[pid] = left
        else:
            del self._sockets_of[pid]
            self._uid_of.pop(pid, None)

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
                    self._uid_of.pop(pid, None)
        self.next_sweep = now + SWEEP_EVERY if self._holders else None
        if self._promised:
            first = min(deadline for deadline, _, _ in self._promised.values())
            self.next_sweep = first if self.next_sweep is None else min(first, self.next_sweep)
        return found
