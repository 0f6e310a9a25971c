"""Fences: calls of two libsock channels on one socket, put back in order.

Calls of one thread reach tcpd in order; calls of two threads (two ZeroMQ
channels), or of a parent and its forked child, do not.  libsock counts the
calls each channel posts; a call that must come after another channel's posted
calls (a close after a worker thread's sends) first sends a fence naming that
channel and its count, which waits here until tcpd has handled that many.
"""
from __future__ import annotations

CHANNELS_MAX = 4096     # channels counted; beyond, the oldest half is forgotten (their fences time out)


class Fences:
    def __init__(self) -> None:
        self._handled: dict[bytes, int] = {}    # channel's routing id -> posted calls handled from it
        self._waiting: set[int] = set()         # sockets with a fence asleep

    def posted(self, channel: bytes, sid: int) -> bool:
        """One more posted call from `channel` on socket `sid` was handled.
        True when a fence sleeps on that socket (the caller retries its sleepers)."""
        handled = self._handled
        if channel not in handled and len(handled) >= CHANNELS_MAX:
            for old in list(handled)[:CHANNELS_MAX // 2]:
                del handled[old]
        handled[channel] = handled.get(channel, 0) + 1
        if sid in self._waiting:
            self._waiting.discard(sid)
            return True
        return False

    def passed(self, channel: bytes, count: int) -> bool:
        return self._handled.get(channel, 0) >= count

    def wait(self, sid: int) -> None:
        """A fence sleeps on `sid` (parked with the socket's other sleepers)."""
        self._waiting.add(sid)
