"""libsock's channels, each an ordered sequence of messages handled exactly once, across
the deaths of tcpd.

libsock numbers the messages of each channel (a thread's DEALER): a call waited
for has id n, a posted call id -n.  tcpd handles message n only after n-1:
  - a number it has handled already is a copy (libsock sends again what it had
    no word of after a tcpd restarted): a posted one is skipped; a waited call is
    answered again from the answer kept for it, or, if it was asleep here when
    the old tcpd died, made to sleep again (a blocking send with the progress it
    had: nothing goes twice);
  - a number beyond the next means messages were lost with the dead tcpd (taken
    from the socket, never handled): this one is dropped too, and libsock, on
    seeing the new incarnation, sends again everything from the first it has no
    word of.
A channel tcpd has never heard of starts at whatever number comes first.

What each channel has reached is written to tcpd's store (store.py) in the
same commit as what its messages did, so that a new tcpd continues the count.
"""
from __future__ import annotations

from dataclasses import dataclass

CHANNELS_MAX = 4096     # channels remembered; beyond, the oldest half is forgotten

NEXT, AGAIN, GAP = "next", "again", "gap"


@dataclass(slots=True)
class ChannelState:
    last: int = 0                   # the number of the last message handled
    answer: tuple | None = None     # (call id, errno, value, data): the last waited call's answer
    progress: tuple | None = None   # (call id, sent): the waited call asleep here, a send's progress


class Channels:
    def __init__(self, note=None) -> None:
        self.states: dict[bytes, ChannelState] = {}
        self._note = note or (lambda identity, kind, value: None)   # to the store: (identity, kind, value)

    def admit(self, identity: bytes, number: int) -> str:
        """NEXT (handle it), AGAIN (a copy of one handled) or GAP (one before it is missing)."""
        state = self.states.get(identity)
        if state is None:
            if len(self.states) >= CHANNELS_MAX:
                for old in list(self.states)[:CHANNELS_MAX // 2]:
                    del self.states[old]
            state = self.states[identity] = ChannelState(number - 1)
        if number == state.last + 1:
            state.last = number
            self._note(identity, "last", number)
            return NEXT
        return AGAIN if number <= state.last else GAP

    def handled(self, identity: bytes) -> int:
        state = self.states.get(identity)
        return state.last if state is not None else 0

    def answered(self, identity: bytes, call_id: int, err: int, value, data) -> None:
        state = self.states.get(identity)
        if state is None:
            return
        state.answer = (call_id, err, value, bytes(data) if data is not None else None)
        self._note(identity, "answer", state.answer)
        if state.progress is not None and state.progress[0] == call_id:
            state.progress = None
            self._note(identity, "progress", None)

    def asleep(self, identity: bytes, call_id: int, sent: int) -> None:
        state = self.states.get(identity)
        if state is None or state.progress == (call_id, sent):
            return
        state.progress = (call_id, sent)
        self._note(identity, "progress", state.progress)

    def restore(self, identity: bytes, kind: str, value) -> None:
        state = self.states.setdefault(identity, ChannelState())
        setattr(state, kind, value)
