"""A signal handler that raises between a message's frames must not leave half a message on the
channel (issue 19): the unfinished message is ended at once with an empty frame (tcpd reads a
send of nothing, or drops it as malformed), and the channel goes on, in order; interrupted again
while ending it, the empty frame still goes first and the channel goes on."""
from __future__ import annotations

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


def test_a_torn_message_is_ended_and_nothing_half_arrives(tmp_path):
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    endpoint = f"ipc://{tmp_path / 'r.sock'}"
    router.bind(endpoint)
    stack = _rpc.Stack(str(tmp_path))
    make = FlakyContext()

    def new_channel():
        sock = make.socket(zmq.DEALER)
        sock.connect(endpoint)
        channel = _rpc._Channel(stack, sock, b"test", "i")
        stack._local.channel = channel
        return channel

    try:
        first = new_channel()
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
        try:
            stack._send_whole(first, [b"D-header", b"D-data"])
        except Interrupted:
            pass
        else:
            raise AssertionError("the interruption did not reach the caller")
        # the second interruption waited for the empty frame: the channel goes on, in order (a
        # dropped channel let what it still queued arrive after the next channel's messages)
        assert stack._local.channel is first and not first.sock.closed
        stack._send_whole(first, [b"E-header", b"E-data"])
        assert receive(router, 2) == [[b"D-header", b""], [b"E-header", b"E-data"]]
        assert receive(router, 1, wait=200) == []
    finally:
        router.close(0)
        make.destroy(0)
        ctx.destroy(0)
