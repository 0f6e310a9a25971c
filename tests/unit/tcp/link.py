"""Two engines wired back to back through a fake network with a fake clock.

The network delays each segment, and (seeded, deterministic) may lose,
reorder or drop chosen segments.  Timers of both engines live in one event
queue with the deliveries, so a run is a discrete-event simulation.
"""
from __future__ import annotations

import heapq
import random
from typing import Callable

from proto.tcp.config import TcpConfig
from proto.tcp.engine import TcpEngine
from proto.wire.tcp import TcpSegment

from .factory import START

ADDR_A = "198.18.0.2"
ADDR_B = "198.18.0.1"


class Link:
    def __init__(self, config_a: dict | None = None, config_b: dict | None = None, seed: int = 1,
                 delay: float = 0.005, loss: float = 0.0, reorder: float = 0.0, jitter: float = 0.0):
        self.a = TcpEngine(TcpConfig(**(config_a or {})), ADDR_A, b"secret-a")
        self.b = TcpEngine(TcpConfig(**(config_b or {})), ADDR_B, b"secret-b")
        self.a.strict = self.b.strict = True
        self.engines = {ADDR_A: self.a, ADDR_B: self.b}
        self.now = START
        self.rng = random.Random(seed)
        self.delay, self.loss, self.reorder, self.jitter = delay, loss, reorder, jitter
        self.drop: Callable[[str, TcpSegment], bool] | None = None   # (src addr, segment) -> drop it?
        self.events: list = []          # heap of (time, order, kind, data)
        self.timers: dict[tuple[str, tuple[int, str]], float] = {}
        self.order = 0
        self.log: list[tuple[float, str, TcpSegment, bool]] = []    # (time sent, src addr, segment, delivered)
        self.transitions: list = []
        self.woken: dict[str, set[int]] = {ADDR_A: set(), ADDR_B: set()}

    # ------------------------------------------------------------ plumbing
    def _push(self, when: float, kind: str, data) -> None:
        self.order += 1
        heapq.heappush(self.events, (when, self.order, kind, data))

    def pump(self) -> None:
        """Move both engines' effects into the network and the timer table."""
        for addr, eng in self.engines.items():
            eff = eng.take_effects()
            for src, dst, seg in eff.segments:
                lost = (self.drop is not None and self.drop(src, seg)) or (self.loss and self.rng.random() < self.loss)
                self.log.append((self.now, src, seg, not lost))
                if lost:
                    continue
                when = self.now + self.delay
                if self.jitter:
                    when += self.rng.random() * self.jitter
                if self.reorder and self.rng.random() < self.reorder:
                    when += self.delay * (1 + 2 * self.rng.random())
                self._push(when, "segment", (src, dst, seg))
            for key, deadline in eff.timers:
                tkey = (addr, key)
                if deadline is None:
                    self.timers.pop(tkey, None)
                else:
                    self.timers[tkey] = deadline
            self.woken[addr] |= eff.woken
            self.transitions.extend(eff.transitions)

    def call(self, addr: str, name: str, *args):
        try:
            return getattr(self.engines[addr], name)(self.now, *args)
        finally:
            self.pump()

    def step(self, until: float) -> bool:
        """Run the next event (delivery or timer) due by `until`.  False when there is none."""
        self.pump()
        next_timer = min(self.timers.items(), key=lambda kv: kv[1], default=None)
        next_event = self.events[0] if self.events else None
        if next_timer is not None and (next_event is None or next_timer[1] <= next_event[0]):
            (addr, key), when = next_timer
            if when > until:
                return False
            del self.timers[(addr, key)]
            self.now = max(self.now, when)
            self.engines[addr].timer_fired(self.now, key)
        elif next_event is not None:
            when, _, _, (src, dst, seg) = next_event
            if when > until:
                return False
            heapq.heappop(self.events)
            self.now = max(self.now, when)
            self.engines[dst].segment_in(self.now, src, dst, seg)
        else:
            return False
        self.pump()
        return True

    def run(self, duration: float | None = None, until: Callable[[], bool] | None = None,
            app: Callable[[], None] | None = None, max_events: int = 1_000_000) -> None:
        """Run events for `duration` seconds or until `until()` holds; `app()` runs after each event."""
        end = self.now + duration if duration is not None else float("inf")
        for _ in range(max_events):
            if until is not None and until():
                return
            if not self.step(end):
                if duration is not None:
                    self.now = max(self.now, end)
                return
            if app is not None:
                app()
                self.pump()
        raise AssertionError("too many events")

    def segments_from(self, addr: str) -> list[TcpSegment]:
        return [seg for _, src, seg, _ in self.log if src == addr]
