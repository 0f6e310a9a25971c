"""tcpd's trace ring for `netstack trace` and the demo's ladder: every state
transition, and every segment while a reader holds a lease on segment tracing.

Events are numbered; a reader asks for the events from a number on and is told
the number to ask for next, and how many it asked for had already left the ring.
"""
from __future__ import annotations

import itertools
from collections import deque

TRACE_RING = 16384            # events kept
TRACE_BATCH = 2000            # events per read


class TraceRing:
    def __init__(self, size: int = TRACE_RING) -> None:
        self.ring: deque = deque(maxlen=size)      # (event number, Transition or segment tuple)
        self.count = 0
        self.segments_until = 0.0     # CLOCK_MONOTONIC end of the segment trace's lease; 0: off

    def tracing_segments(self, now: float) -> bool:
        return self.segments_until > now

    def transition(self, transition) -> None:
        self.count += 1
        self.ring.append((self.count, transition))

    def segment(self, now: float, direction: str, src: str, dst: str, segment) -> None:
        self.count += 1
        self.ring.append((self.count, (now, direction, src, segment.src_port, dst, segment.dst_port,
                                       int(segment.flags), segment.seq, segment.ack,
                                       len(segment.payload), segment.window)))

    def lease(self, now: float, seconds: float) -> int:
        """Record segments too, until `seconds` from now (or a later lease); the next event's number."""
        self.segments_until = max(self.segments_until, now + seconds)
        return self.count + 1

    def stop(self) -> int:
        self.segments_until = 0.0
        return self.count + 1

    def read(self, since: int) -> dict:
        """Events numbered `since` and after (at most TRACE_BATCH); `next` is the number
        to ask for next time, `lost` how many asked for had already left the ring."""
        first = self.ring[0][0] if self.ring else self.count + 1
        start = max(since, first)
        skip = start - first
        events = []
        for number, event in itertools.islice(self.ring, skip, skip + TRACE_BATCH):
            if isinstance(event, tuple):
                now, direction, src, sport, dst, dport, flags, seq, ack, length, window = event
                events.append({"n": number, "kind": "segment", "time": now, "dir": direction,
                               "src": [src, sport], "dst": [dst, dport], "flags": flags, "seq": seq,
                               "ack": ack, "len": length, "window": window})
            else:
                events.append({"n": number, "kind": "state", "time": event.time, "conn": event.conn_id,
                               "local": list(event.local), "remote": list(event.remote),
                               "from": event.from_state.value, "to": event.to_state.value,
                               "cause": event.cause})
        following = events[-1]["n"] + 1 if events else max(since, self.count + 1)
        return {"next": following, "lost": max(0, min(first, self.count + 1) - since) if since else 0,
                "events": events}
