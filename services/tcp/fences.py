"""Fences: calls of two libsock channels on one socket, put back in order.

Calls of one thread reach tcpd in order; calls of two threads (two ZeroMQ
channels), or of a parent and its forked child, do not.  libsock numbers the
messages of each channel (channels.py); a call that must come after another
channel's posted calls (a close after a worker thread's sends) first sends a
fence naming that channel and the number of its last post, which waits here
until tcpd has handled that far.
"""
from __future__ import annotations

from typing import Callable


class Fences:
    def __init__(self, handled: Callable[[bytes], int]) -> None:
        self._handled = handled                 # channel's routing id -> number of its last message handled
        self._waiting: set[int] = set()         # sockets with a fence asleep

    def posted(self, sid: int) -> bool:
        """A posted call on socket `sid` was handled.  True when a fence sleeps on that socket
        (the caller retries its sleepers)."""
        if sid in self._waiting:
            self._waiting.discard(sid)
            return True
        return False

    def passed(self, channel: bytes, count: int) -> bool:
        return self._handled(channel) >= count

    def wait(self, sid: int) -> None:
        """A fence sleeps on `sid` (parked with the socket's other sleepers)."""
        self._waiting.add(sid)
