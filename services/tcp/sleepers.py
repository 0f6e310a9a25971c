"""The calls asleep in tcpd, as Linux's wait queues: per socket, with timeouts.

A blocking call that cannot finish is parked here; when the engine wakes its
socket the shell takes the socket's sleepers and tries them again; a call
whose timeout passes is handed back to be answered with EAGAIN.  Timeouts
live in a heap with lazy deletion (a call answered early leaves its entry,
skipped later), so finding the next one does not scan every sleeper.
"""
from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass

from proto.ipc.messages import Call


@dataclass(slots=True, eq=False)
class ParkedCall:
    identity: bytes
    call: Call
    deadline: float | None      # CLOCK_MONOTONIC; None waits forever
    sent: int = 0               # a blocking send's progress
    answered: bool = False      # answered: its deadline entry is stale
    started: bool = False       # a connect whose handshake has begun
    timed: bool = False         # its deadline is in the heap (once, however often it is re-parked)

    @property
    def sid(self) -> int:
        return self.call.sid[1]


class Sleepers:
    def __init__(self) -> None:
        self._by_socket: dict[int, list[ParkedCall]] = {}
        self._deadlines: list[tuple[float, int, ParkedCall]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return sum(len(calls) for calls in self._by_socket.values())

    def __contains__(self, sid: int) -> bool:
        return sid in self._by_socket

    def park(self, parked: ParkedCall) -> None:
        self._by_socket.setdefault(parked.sid, []).append(parked)
        if parked.deadline is not None and not parked.timed:
            parked.timed = True
            heapq.heappush(self._deadlines, (parked.deadline, next(self._order), parked))

    def take(self, sid: int) -> list[ParkedCall]:
        """Every call asleep on `sid`, removed (park again those that must keep waiting)."""
        return self._by_socket.pop(sid, [])

    def holds(self, sid: int, identity: bytes, call_id: int) -> bool:
        """Is the call `call_id` of channel `identity` asleep on `sid`?"""
        return any(p.call.id == call_id and p.identity == identity for p in self._by_socket.get(sid, ()))

    def withdraw(self, sid: int, identity: bytes, call_id: int) -> ParkedCall | None:
        """The call `call_id` of channel `identity` asleep on `sid`, removed; None if not asleep."""
        calls = self._by_socket.get(sid, ())
        for parked in calls:
            if parked.call.id == call_id and parked.identity == identity:
                calls.remove(parked)
                if not calls:
                    del self._by_socket[sid]
                return parked
        return None

    def next_deadline(self) -> float | None:
        heap = self._deadlines
        while heap and heap[0][2].answered:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def expired(self, now: float) -> list[ParkedCall]:
        """The calls whose timeout has passed, removed, marked answered (the caller answers them)."""
        out = []
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            parked = heapq.heappop(heap)[2]
            if parked.answered:
                continue
            calls = self._by_socket[parked.sid]
            calls.remove(parked)
            if not calls:
                del self._by_socket[parked.sid]
            parked.answered = True
            out.append(parked)
        return out
