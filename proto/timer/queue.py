"""The timer queue of timerd: (owner, key) -> deadline, earliest first.

A heap with lazy deletion: re-arming or cancelling leaves the old heap entry
behind, and `expired` skips entries whose deadline no longer matches.
"""
from __future__ import annotations

import heapq
from typing import Any, Hashable


class TimerQueue:
    def __init__(self) -> None:
        self._deadlines: dict[tuple[str, Hashable], float] = {}
        self._heap: list[tuple[float, int, str, Hashable]] = []
        self._sequence = 0

    def __len__(self) -> int:
        return len(self._deadlines)

    def arm(self, owner: str, key: Hashable, deadline: float) -> None:
        self._deadlines[(owner, key)] = deadline
        self._sequence += 1
        heapq.heappush(self._heap, (deadline, self._sequence, owner, key))
        if len(self._heap) > 4 * len(self._deadlines) + 64:
            self._compact()

    def cancel(self, owner: str, key: Hashable) -> None:
        self._deadlines.pop((owner, key), None)

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            deadline, _, owner, key = heap[0]
            if self._deadlines.get((owner, key)) == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def expired(self, now: float) -> list[tuple[str, Hashable, float]]:
        """Remove and return every timer whose deadline is <= now, earliest first."""
        fired = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, owner, key = heapq.heappop(heap)
            if self._deadlines.get((owner, key)) == deadline:
                del self._deadlines[(owner, key)]
                fired.append((owner, key, deadline))
        return fired

    def owned_by(self, owner: str) -> dict[Hashable, float]:
        return {key: deadline for (who, key), deadline in self._deadlines.items() if who == owner}

    def _compact(self) -> None:
        self._heap = [entry for entry in self._heap if self._deadlines.get((entry[2], entry[3])) == entry[0]]
        heapq.heapify(self._heap)


def freeze_key(key: Any) -> Hashable:
    """msgpack gives lists; a timer key must be hashable."""
    if isinstance(key, list):
        return tuple(freeze_key(part) for part in key)
    return key
