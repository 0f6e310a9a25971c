"""What the engine asks its shell to do after each call (the ways out)."""
from __future__ import annotations

from dataclasses import dataclass, field

from proto.tcp.state import Transition
from proto.wire.tcp import TcpSegment

TimerKey = tuple[int, str]


@dataclass
class Effects:
    segments: list[tuple[str, str, TcpSegment]] = field(default_factory=list)   # (src, dst, segment), in order
    timers: list[tuple[TimerKey, float | None]] = field(default_factory=list)   # arm at deadline, or None = cancel
    woken: set[int] = field(default_factory=set)                                # socket ids whose poll mask may have changed
    transitions: list[Transition] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.segments or self.timers or self.woken or self.transitions)


__all__ = ["Effects", "Transition", "TimerKey"]
