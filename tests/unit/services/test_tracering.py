"""tcpd's trace ring: numbered events, segments only under a lease, losses reported."""
from proto.tcp.state import State, Transition
from proto.wire.tcp import TcpFlags, TcpSegment

from services.tcp.tracering import TraceRing


def _transition(n: int) -> Transition:
    return Transition(time=float(n), conn_id=1, local=("198.18.0.2", 80), remote=("198.18.0.1", 4000 + n),
                      from_state=State.LISTEN, to_state=State.SYN_RCVD, cause="SYN")


def test_segments_are_recorded_only_under_a_lease_and_numbering_continues():
    ring = TraceRing()
    ring.transition(_transition(1))
    assert not ring.tracing_segments(10.0)
    assert ring.lease(10.0, 5.0) == 2
    assert ring.tracing_segments(14.9) and not ring.tracing_segments(15.0)
    ring.segment(11.0, "in", "198.18.0.1", "198.18.0.2", TcpSegment(4000, 80, 7, 0, TcpFlags.SYN, 64240))
    got = ring.read(1)
    assert [e["n"] for e in got["events"]] == [1, 2] and got["next"] == 3 and got["lost"] == 0
    assert got["events"][1]["kind"] == "segment" and got["events"][1]["seq"] == 7
    assert ring.stop() == 3 and not ring.tracing_segments(11.0)


def test_a_reader_that_fell_behind_is_told_how_many_it_lost():
    ring = TraceRing(size=4)
    for n in range(1, 11):
        ring.transition(_transition(n))
    got = ring.read(3)
    assert [e["n"] for e in got["events"]] == [7, 8, 9, 10] and got["lost"] == 4 and got["next"] == 11
    assert ring.read(11) == {"next": 11, "lost": 0, "events": []}
