"""Timer requests on their way to timerd, held for a moment of timer slack.

Most of TCP's timers are cancelled soon after they are armed: a SYN's and a
segment's retransmission timers when the ACK comes a round trip later, the
connection-establishment timer when the handshake ends.  Sent at once, each
arm and each cancel is a message to timerd, and a message costs as much CPU as
a segment.  Held for `slack` seconds (Linux's timer slack, for the same end: a
timer may fire a little late so that wake-ups can be merged), an arm that is
cancelled or moved within the slack never travels, and the rest travel together
in one message.

A request is never held past its deadline: the batch is due at the earliest
of (the first request + slack) and every deadline it holds, so a timer fires
late by at most one message's trip.  `held` mirrors what timerd holds of ours,
so a cancel is sent only for an arm that was.
"""
from __future__ import annotations

from typing import Hashable


class TimerBatch:
    def __init__(self, slack: float):
        self.slack = slack
        self.pending: dict[Hashable, float | None] = {}     # key -> deadline, or None to cancel
        self.held: set[Hashable] = set()                    # keys timerd holds (as far as we told it)
        self.due: float | None = None                       # when `pending` must leave
        self.dropped = 0                                    # requests that never had to travel

    def add(self, now: float, key: Hashable, deadline: float | None) -> None:
        if key in self.pending:
            self.dropped += 1                               # the earlier request for it is moot
        self.pending[key] = deadline
        due = now + self.slack if self.due is None else self.due
        if deadline is not None and deadline < due:
            due = deadline
        self.due = due

    def take(self, now: float) -> list[tuple[Hashable, float | None]]:
        """The requests to send now: all of them once the batch is due, else none."""
        if self.due is None or now < self.due:
            return []
        held, out = self.held, []
        for key, deadline in self.pending.items():
            if deadline is not None:
                held.add(key)
                out.append((key, deadline))
            elif key in held:
                held.discard(key)
                out.append((key, None))
            else:
                self.dropped += 1                           # armed and cancelled within the slack
        self.pending.clear()
        self.due = None
        return out

    def fired(self, key: Hashable) -> None:
        """timerd let go of `key` (it fired)."""
        self.held.discard(key)

    def restart(self, armed: dict[Hashable, float]) -> list[tuple[Hashable, float]]:
        """A new timerd holds nothing: every armed timer goes to it now, nothing stays pending."""
        self.pending.clear()
        self.due = None
        self.held = set(armed)
        return list(armed.items())
