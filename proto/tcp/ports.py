"""The local port table: bind, conflicts, and the choice of an ephemeral port (Linux inet_hashtables.c).

One local address (the stack's), so a port is the whole binding.  A port is
held by the ids of the sockets bound to it; the table looks the sockets up in
the engine's `conns` and its four-tuples in `by_tuple` (shared, not copied).
"""
from __future__ import annotations

import hashlib

from proto.tcp.connection import Connection
from proto.tcp.state import State


class PortTable:
    def __init__(self, conns: dict[int, Connection], by_tuple: dict, key: bytes,
                 ephemeral: tuple[int, int]):
        self.users: dict[int, set[int]] = {}          # local port -> ids bound to it
        self._conns = conns
        self._by_tuple = by_tuple
        self._key = key
        self._ephemeral = ephemeral
        self._counter = 0

    def bind(self, conn: Connection, port: int, explicit: bool) -> None:
        conn.local_port = port
        conn.bound = True
        conn.port_explicit = explicit
        self.users.setdefault(port, set()).add(conn.id)

    def unbind(self, conn: Connection) -> None:
        if conn.bound:
            users = self.users.get(conn.local_port)
            if users is not None:
                users.discard(conn.id)
                if not users:
                    del self.users[conn.local_port]
            conn.bound = False
            if not conn.port_explicit:
                conn.local_port = 0

    def conflict(self, conn: Connection, port: int) -> bool:
        """Linux inet_csk_bind_conflict (one local address): SO_REUSEADDR on both sides lets a
        socket share a port with anything but a listener (e.g. a connection in TIME_WAIT)."""
        for cid in self.users.get(port, ()):
            if cid == conn.id:
                continue
            other = self._conns.get(cid)
            if other is None:
                continue
            if other.state is State.LISTEN or not (conn.so_reuseaddr and other.so_reuseaddr):
                return True
        return False

    def pick(self, now: float, remote: tuple[str, int] | None) -> int | None:
        """An ephemeral port, starting at a keyed-hash offset (RFC 6056 style) and walking the range.
        For connect (`remote` given) a port used only by other connects is fine if the four-tuple is new."""
        lo, hi = self._ephemeral
        n = hi - lo + 1
        self._counter += 1
        h = hashlib.blake2s(f"{remote}|{int(now)}|{self._counter}".encode(), key=self._key,
                            digest_size=4).digest()
        offset = int.from_bytes(h, "big")
        conns = self._conns
        for i in range(n):
            port = lo + (offset + i) % n
            users = self.users.get(port)
            if not users:
                return port
            if remote is not None and (port, remote[0], remote[1]) not in self._by_tuple:
                if all(not conns[c].port_explicit and conns[c].state is not State.LISTEN for c in users):
                    return port
        return None
