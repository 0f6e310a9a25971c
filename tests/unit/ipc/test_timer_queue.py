from __future__ import annotations

from proto.timer.queue import TimerQueue, freeze_key


def test_fires_in_deadline_order_and_only_when_due():
    q = TimerQueue()
    q.arm("tcpd", (1, "retransmit"), 5.0)
    q.arm("tcpd", (2, "delayed_ack"), 2.0)
    assert q.next_deadline() == 2.0
    assert q.expired(1.9) == []
    assert q.expired(5.0) == [("tcpd", (2, "delayed_ack"), 2.0), ("tcpd", (1, "retransmit"), 5.0)]
    assert len(q) == 0 and q.next_deadline() is None


def test_rearm_moves_and_cancel_removes():
    q = TimerQueue()
    q.arm("tcpd", "k", 1.0)
    q.arm("tcpd", "k", 3.0)
    assert q.expired(2.0) == []
    q.cancel("tcpd", "k")
    assert q.expired(10.0) == []
    q.cancel("tcpd", "never armed")


def test_owners_are_separate():
    q = TimerQueue()
    q.arm("a", "k", 1.0)
    q.arm("b", "k", 2.0)
    assert q.owned_by("a") == {"k": 1.0}


def test_heap_stays_bounded_under_rearming():
    q = TimerQueue()
    for i in range(10_000):
        q.arm("tcpd", "k", float(i))
    assert len(q._heap) < 200


def test_freeze_key():
    assert freeze_key([3, "retransmit"]) == (3, "retransmit")
