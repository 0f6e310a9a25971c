"""tcpd's timer slack: arms and cancels to timerd, held a moment so that most never travel."""
from __future__ import annotations

from services.tcp.timerbatch import TimerBatch

SYN = (7, "retransmit")
CONNECT = (7, "connect")


def test_nothing_leaves_before_the_slack_ends():
    batch = TimerBatch(slack=0.01)
    batch.add(0.0, SYN, 1.0)
    assert batch.due == 0.01
    assert batch.take(0.005) == []
    assert batch.take(0.01) == [(SYN, 1.0)]
    assert batch.due is None and batch.take(5.0) == []


def test_an_arm_cancelled_within_the_slack_never_travels():
    """The short connection: SYN retransmission and connection timers armed, cancelled a round trip later."""
    batch = TimerBatch(slack=0.01)
    batch.add(0.0, SYN, 1.0)
    batch.add(0.0, CONNECT, 75.0)
    batch.add(0.002, SYN, None)
    batch.add(0.002, CONNECT, None)
    assert batch.take(0.01) == []
    assert batch.dropped == 4


def test_a_cancel_travels_for_an_arm_that_did():
    batch = TimerBatch(slack=0.01)
    batch.add(0.0, SYN, 1.0)
    assert batch.take(0.01) == [(SYN, 1.0)]
    batch.add(0.5, SYN, None)
    assert batch.take(0.51) == [(SYN, None)]
    batch.add(0.6, SYN, None)                   # timerd no longer holds it: nothing to say
    assert batch.take(0.61) == []


def test_a_fired_timer_needs_no_cancel():
    batch = TimerBatch(slack=0.01)
    batch.add(0.0, SYN, 1.0)
    batch.take(0.01)
    batch.fired(SYN)
    batch.add(1.0, SYN, None)
    assert batch.take(1.01) == []


def test_the_batch_leaves_by_its_earliest_deadline():
    """A timer never fires late for the slack: a deadline inside it makes the batch due then."""
    batch = TimerBatch(slack=0.01)
    batch.add(0.0, CONNECT, 75.0)
    batch.add(0.001, (8, "delayed_ack"), 0.004)
    assert batch.due == 0.004
    assert batch.take(0.004) == [(CONNECT, 75.0), ((8, "delayed_ack"), 0.004)]


def test_the_last_request_for_a_key_wins():
    batch = TimerBatch(slack=0.01)
    batch.add(0.0, SYN, 3.0)
    batch.add(0.001, SYN, 2.0)
    assert batch.take(0.01) == [(SYN, 2.0)] and batch.dropped == 1


def test_zero_slack_sends_every_request_at_once():
    batch = TimerBatch(slack=0.0)
    batch.add(1.0, SYN, 2.0)
    assert batch.take(1.0) == [(SYN, 2.0)]


def test_a_new_timerd_gets_every_armed_timer_and_nothing_stays_pending():
    batch = TimerBatch(slack=0.01)
    batch.add(0.0, SYN, 1.0)
    assert batch.restart({CONNECT: 75.0, SYN: 1.0}) == [(CONNECT, 75.0), (SYN, 1.0)]
    assert batch.due is None and batch.pending == {}
    batch.add(0.1, CONNECT, None)
    assert batch.take(0.2) == [(CONNECT, None)]
