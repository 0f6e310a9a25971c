"""timerd: the kernel timer list.  Owners arm, re-arm and cancel timers by
(owner, key) with absolute CLOCK_MONOTONIC deadlines; timerd tells the owner
when one fires, at the owner's own socket.  A new timerd announces its incarnation to its clients, who
re-arm what they hold.
"""
from __future__ import annotations

import re

from proto.ipc.messages import TimerFired, TimerSet
from proto.timer.queue import TimerQueue, freeze_key
from services._shell import Service, main

CLIENTS = ("tcpd",)
_OWNER = re.compile(r"[a-z][a-z0-9-]{0,31}")


class Timerd(Service):
    name = "timerd"

    def __init__(self, run_dir: str):
        super().__init__(run_dir)
        self.queue = TimerQueue()
        self.handlers["timer_set"] = self.on_timer_set
        self.counters.update(armed=0, cancelled=0, fired=0, late_max_us=0)
        for client in CLIENTS:
            self.announce(client)

    def on_timer_set(self, identity: bytes, msg: TimerSet) -> None:
        if not self._valid_owner(msg.owner):
            self.count("ipc_bad_timer_owner")
            return
        for entry in msg.entries:
            if not isinstance(entry, list) or len(entry) != 2:
                self.count("ipc_bad_timer_entry")
                continue
            key, deadline = entry
            key = freeze_key(key)
            if deadline is None:
                self.queue.cancel(msg.owner, key)
                self.counters["cancelled"] += 1
            elif isinstance(deadline, (int, float)):
                self.queue.arm(msg.owner, key, float(deadline))
                self.counters["armed"] += 1
            else:
                self.count("ipc_bad_timer_entry")

    def _valid_owner(self, owner: str) -> bool:
        """Fires go to the owner's socket, RUN/<owner>.sock: a plain name whose socket is there."""
        if owner in self.peers:
            return True
        return bool(_OWNER.fullmatch(owner)) and (self.run_dir / f"{owner}.sock").exists()

    def next_deadline(self) -> float | None:
        return self.queue.next_deadline()

    def tick(self, now: float) -> None:
        fired = self.queue.expired(now)
        if not fired:
            return
        by_owner: dict[str, list] = {}
        for owner, key, deadline in fired:
            by_owner.setdefault(owner, []).append([key, deadline])
            late_us = int((now - deadline) * 1e6)
            if late_us > self.counters["late_max_us"]:
                self.counters["late_max_us"] = late_us
        self.counters["fired"] += len(fired)
        for owner, entries in by_owner.items():
            self.send(owner, TimerFired(entries))

    def control_stats(self) -> dict:
        return {**self.counters, "pending": len(self.queue)}


if __name__ == "__main__":
    main(Timerd)
