"""A signal handler that raises between a message's frames must not leave half a message on the
channel (issue 19): the unfinished message is ended with an empty frame before the channel's next
message (tcpd reads a send of nothing, or drops it as malformed), and the channel goes on, in
order; interrupted again while ending it, that next call is the one interrupted (nothing of it
leaves) and the one after ends it.  A numbered message a handler stopped leaves its number to a
filler, so tcpd never sees a gap (after which it drops all the channel carries)."""
from __future__ import annotations

import pytest
import zmq

from libsock import _rpc


class Interrupted(Exception):
    pass


class FlakySocket(zmq.Socket):
    """Raises (as a signal handler would) when the frame numbered `fail_at` is about to go."""
    fail_at: set = set()
    sent = 0

    def send(self, data, flags=0, copy=True, track=False, **kwargs):
        type(self).sent += 1
        if type(self).sent in type(self).fail_at:
            raise Interrupted()
        return super().send(data, flags, copy=copy, track=track, **kwargs)


def receive(router, count: int, wait: int = 2000) -> list:
    got = []
    poller = zmq.Poller()
    poller.register(router, zmq.POLLIN)
    while len(got) < count and poller.poll(wait):
        got.append(router.recv_multipart()[1:])
    return got


class FlakyContext(zmq.Context):
    _socket_class = FlakySocket


@pytest.fixture
def wired(tmp_path):
    """(router, stack, a channel of the stack over a FlakySocket connected to the router)."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    endpoint = f"ipc://{tmp_path / 'r.sock'}"
    router.bind(endpoint)
    stack = _rpc.Stack(str(tmp_path))
    make = FlakyContext()
    sock = make.socket(zmq.DEALER)
    sock.connect(endpoint)
    channel = _rpc._Channel(stack, sock, b"test", "i")
    stack._local.channel = channel
    try:
        yield router, stack, channel
    finally:
        router.close(0)
        make.destroy(0)
        ctx.destroy(0)


def test_a_torn_message_is_ended_and_nothing_half_arrives(wired):
    router, stack, first = wired
    stack._send_whole(first, [b"A-header", b"A-data"])           # whole
    FlakySocket.fail_at = {FlakySocket.sent + 2}                 # the second frame of the next
    try:
        stack._send_whole(first, [b"B-header", b"B-data"])
    except Interrupted:
        pass
    else:
        raise AssertionError("the interruption did not reach the caller")
    assert stack._local.channel is first and not first.sock.closed     # the channel goes on
    stack._send_whole(first, [b"C-header", b"C-data"])
    got = receive(router, 3)
    assert got == [[b"A-header", b"A-data"], [b"B-header", b""], [b"C-header", b"C-data"]]
    FlakySocket.fail_at = {FlakySocket.sent + 2, FlakySocket.sent + 3}   # torn, and again ending it
    for message in ([b"D-header", b"D-data"], [b"E-header", b"E-data"]):
        try:
            stack._send_whole(first, message)
        except Interrupted:
            pass
        else:
            raise AssertionError("the interruption did not reach the caller")
    # E was interrupted before any of it left (the empty frame for D had not gone): the
    # channel goes on, in order (a dropped channel let what it still queued arrive after
    # the next channel's messages)
    assert stack._local.channel is first and not first.sock.closed
    stack._send_whole(first, [b"F-header", b"F-data"])
    assert receive(router, 2) == [[b"D-header", b""], [b"F-header", b"F-data"]]
    assert receive(router, 1, wait=200) == []


def test_a_number_a_signal_took_is_filled_before_the_next(wired):
    """A handler raising as a numbered message goes (before its first frame, or between its
    frames, and again while the next message mends it): every number reaches the router once,
    in order, as the message or as its filler, and nothing is half."""
    from proto.ipc import codec
    from proto.ipc.messages import Call

    router, stack, channel = wired
    sid = ["i", 7]
    plan = [set(), {2}, {1}, {2}, set(), {1, 3}, set()]     # frames (of this round's sends) that raise
    for fail in plan:
        FlakySocket.fail_at = {FlakySocket.sent + k for k in fail}
        try:
            stack._send_numbered(channel, lambda n: Call(n, "send", sid, [0], None, payload=(b"x",)),
                                 posted=True)
        except Interrupted:
            pass
    assert not channel.pending and not channel.open
    numbers, halves = [], 0
    for frames in receive(router, 64, wait=300):
        try:
            message = codec.decode(frames)
        except codec.MessageError:
            continue                    # an empty message alone (ended nothing): dropped
        if message.op == "send" and message.payload == (b"",):
            halves += 1                 # a torn one, ended: a send of nothing
        numbers.append(-message.id)
    # (a round whose mending was interrupted took no number: its message never went)
    assert 3 <= channel.seq < len(plan)
    # each number at least once, in order (a second copy is skipped by tcpd), none beyond
    assert sorted(set(numbers)) == list(range(1, channel.seq + 1))
    assert numbers == sorted(numbers)
    assert halves >= 1
