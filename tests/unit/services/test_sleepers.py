from __future__ import annotations

from proto.ipc.messages import Call
from services.tcp.sleepers import ParkedCall, Sleepers


def parked(sid: int, deadline: float | None, op: str = "recv") -> ParkedCall:
    return ParkedCall(b"app", Call(1, op, ["inc", sid], [], None), deadline)


def test_take_returns_a_sockets_sleepers_and_forgets_them():
    s = Sleepers()
    a, b, c = parked(1, None), parked(1, 5.0), parked(2, 3.0)
    for p in (a, b, c):
        s.park(p)
    assert len(s) == 3 and 1 in s
    assert s.take(1) == [a, b]
    assert 1 not in s and len(s) == 1


def test_timeouts_expire_in_order_and_answered_calls_are_skipped():
    s = Sleepers()
    early, late, answered = parked(1, 1.0), parked(2, 2.0), parked(3, 0.5)
    for p in (early, late, answered):
        s.park(p)
    answered.answered = True
    s.take(3)
    assert s.next_deadline() == 1.0
    assert s.expired(1.5) == [early]
    assert early.answered and 1 not in s
    assert s.next_deadline() == 2.0
    assert s.expired(10) == [late]
    assert s.next_deadline() is None and len(s) == 0


def test_a_call_woken_and_parked_again_keeps_one_deadline_entry():
    s = Sleepers()
    p = parked(1, 4.0)
    s.park(p)
    for _ in range(1000):
        s.park(s.take(1)[0])            # woken, retried, still waiting
    assert len(s._deadlines) == 1
    assert s.expired(5.0) == [p]
    assert s.expired(6.0) == []


def test_withdraw_takes_one_channels_call_by_its_id_and_nothing_else():
    s = Sleepers()
    mine = ParkedCall(b"app", Call(7, "recv", ["inc", 1], [], None), 5.0)
    other_channel = ParkedCall(b"other", Call(7, "recv", ["inc", 1], [], None), None)
    for p in (mine, other_channel):
        s.park(p)
    assert s.withdraw(1, b"app", 8) is None            # no such call: already answered
    assert s.withdraw(1, b"app", 7) is mine
    assert s.withdraw(1, b"app", 7) is None
    assert s.take(1) == [other_channel]
    assert s.withdraw(1, b"other", 7) is None and 1 not in s


def test_holds_answers_for_one_channels_call_without_taking_it():
    s = Sleepers()
    mine = ParkedCall(b"app", Call(7, "recv", ["inc", 1], [], None), None)
    s.park(mine)
    assert s.holds(1, b"app", 7) and not s.holds(1, b"app", 8) and not s.holds(1, b"other", 7)
    assert not s.holds(2, b"app", 7) and s.take(1) == [mine]
