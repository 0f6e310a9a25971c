"""nicd's impairment stage: loss, delay with jitter, reordering, duplication.

The kernel these stacks run on has no netem, so nicd impairs the packets that
cross its device itself.  This is the pure part: an `Impairment` is fed one
packet at a time with the time and its direction, and answers with the packets
to deliver at once; the ones it holds back it releases from `release(now)`
once they are due (`next_release()` says when to call it next).  Randomness
comes from a seeded `random.Random`, so a test with a fake clock and a seed
sees the same run every time.

What each knob does, for the packets of the directions it applies to
("in": from the device towards the stack, "out": from the stack to the device):

- loss P: the packet is dropped with probability P.
- duplicate P: with probability P the packet is delivered twice (the copy
  is delayed like any packet, so with jitter it may arrive first).
- delay D, jitter J: the packet is held for D + uniform(-J, +J) seconds
  (never less than 0).  Like netem, jitter alone may reorder packets.
- reorder P: with probability P the packet is held back and delivered just
  after the next packet of its direction (so the two swap), or, when no other
  packet follows within REORDER_HOLD seconds, on its own after that wait.
"""
from __future__ import annotations

import heapq
import random
from dataclasses import asdict, dataclass

DIRECTIONS = ("in", "out", "both")
REORDER_HOLD = 0.05
COUNTERS = ("passed", "dropped", "delayed", "duplicated", "reordered")


@dataclass(frozen=True, slots=True)
class ImpairSettings:
    loss: float = 0.0
    delay: float = 0.0          # seconds
    jitter: float = 0.0         # seconds
    reorder: float = 0.0
    duplicate: float = 0.0
    direction: str = "both"

    def __post_init__(self):
        for name in ("loss", "reorder", "duplicate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a probability between 0 and 1, not {value!r}")
        for name in ("delay", "jitter"):
            value = getattr(self, name)
            if not 0.0 <= value <= 3600.0:
                raise ValueError(f"{name} must be between 0 and 3600 seconds, not {value!r}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction is one of {', '.join(DIRECTIONS)}, not {self.direction!r}")

    def applies(self, direction: str) -> bool:
        return self.direction == "both" or self.direction == direction

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        parts = []
        if self.loss:
            parts.append(f"loss {self.loss:.3g}")
        if self.delay or self.jitter:
            parts.append(f"delay {self.delay * 1000:g} ms" + (f" ± {self.jitter * 1000:g} ms" if self.jitter else ""))
        if self.reorder:
            parts.append(f"reorder {self.reorder:.3g}")
        if self.duplicate:
            parts.append(f"duplicate {self.duplicate:.3g}")
        return (", ".join(parts) or "nothing") + f" ({self.direction})"


class Impairment:
    """The stage itself: packets in, packets out now or later."""

    def __init__(self, settings: ImpairSettings, seed: int | None = None):
        self.settings = settings
        self.random = random.Random(seed)
        self.counters = dict.fromkeys(COUNTERS, 0)
        self._schedule: list[tuple[float, int, str, bytes]] = []     # heap of (due, order, direction, packet)
        self._order = 0
        # per direction: the packet held back for reordering, and until when at most
        self._held: dict[str, tuple[float, bytes]] = {}

    def configure(self, settings: ImpairSettings) -> None:
        """New settings; packets already held keep their release times."""
        self.settings = settings

    # -- the way in ------------------------------------------------------------

    def offer(self, now: float, packet: bytes, direction: str) -> list[bytes]:
        """One packet crossing in `direction`: the packets to deliver now, in order
        (none, this one, it twice, or a packet it lets overtake it)."""
        settings = self.settings
        if not settings.applies(direction):
            self.counters["passed"] += 1
            return [packet]
        rand = self.random.random
        if settings.loss and rand() < settings.loss:
            self.counters["dropped"] += 1
            return []
        copies = 1
        if settings.duplicate and rand() < settings.duplicate:
            copies = 2
            self.counters["duplicated"] += 1
        now_out: list[bytes] = []
        held = self._held.pop(direction, None)
        if held is None and settings.reorder and rand() < settings.reorder:
            # hold this one back: the next packet of this direction overtakes it
            self._held[direction] = (now + settings.delay + REORDER_HOLD, packet)
            copies -= 1
        for _ in range(copies):
            self._deliver(now, packet, direction, now_out)
        if held is not None:
            self.counters["reordered"] += 1
            self._deliver(now, held[1], direction, now_out, after=True)
        return now_out

    def _deliver(self, now: float, packet: bytes, direction: str, now_out: list[bytes],
                 after: bool = False) -> None:
        settings = self.settings
        delay = settings.delay
        if settings.jitter:
            delay = max(0.0, delay + self.random.uniform(-settings.jitter, settings.jitter))
        if delay <= 0.0:
            if after and self._pending_in(direction):
                # the packet it swapped with is scheduled later: follow it
                self._push(self._last_due(direction), direction, packet)
                return
            self.counters["passed"] += 1
            now_out.append(packet)
            return
        due = now + delay
        if after:
            due = max(due, self._last_due(direction))
        self.counters["delayed"] += 1
        self._push(due, direction, packet)

    def _push(self, due: float, direction: str, packet: bytes) -> None:
        self._order += 1
        heapq.heappush(self._schedule, (due, self._order, direction, packet))

    def _pending_in(self, direction: str) -> bool:
        return any(entry[2] == direction for entry in self._schedule)

    def _last_due(self, direction: str) -> float:
        return max((entry[0] for entry in self._schedule if entry[2] == direction), default=0.0)

    # -- the way out -----------------------------------------------------------

    def next_release(self) -> float | None:
        """When `release` next has something to hand out (None: nothing held)."""
        candidates = [due for due, _ in self._held.values()]
        if self._schedule:
            candidates.append(self._schedule[0][0])
        return min(candidates) if candidates else None

    def release(self, now: float) -> list[tuple[str, bytes]]:
        """(direction, packet) for every held packet due at `now`, in due order."""
        for direction, (until, packet) in list(self._held.items()):
            if until <= now:        # nothing came to overtake it: it goes alone, late
                del self._held[direction]
                self.counters["delayed"] += 1
                self._push(until, direction, packet)
        out = []
        schedule = self._schedule
        while schedule and schedule[0][0] <= now:
            _, _, direction, packet = heapq.heappop(schedule)
            self.counters["passed"] += 1
            out.append((direction, packet))
        return out

    def flush(self) -> list[tuple[str, bytes]]:
        """Everything still held, at once (the stage is being switched off)."""
        for direction, (until, packet) in list(self._held.items()):
            self._push(until, direction, packet)
        self._held.clear()
        out = []
        while self._schedule:
            _, _, direction, packet = heapq.heappop(self._schedule)
            self.counters["passed"] += 1
            out.append((direction, packet))
        return out

    def pending(self) -> int:
        return len(self._schedule) + len(self._held)
