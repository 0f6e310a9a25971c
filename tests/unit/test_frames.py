"""send_frames / recv_frames: a message's frames, in order and whole, small ones copied and large
ones handed over, as send_multipart / recv_multipart would."""
from __future__ import annotations

import pytest
import zmq

from channel.frames import NOBLOCK, ZERO_COPY_FROM, recv_frames, send_frames


@pytest.fixture
def pair():
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.bind("inproc://frames")
    b.connect("inproc://frames")
    yield a, b
    a.close(0)
    b.close(0)
    ctx.term()


def test_frames_arrive_in_order_as_one_message(pair):
    a, b = pair
    large = bytes(range(256)) * (ZERO_COPY_FROM // 256 + 1)
    send_frames(a, [b"header", memoryview(b"segment"), large])
    send_frames(a, [b"next"])
    frames = recv_frames(b)
    assert [f.bytes for f in frames] == [b"header", b"segment", large]
    assert [f.bytes for f in recv_frames(b)] == [b"next"]


def test_a_large_frame_is_handed_over_without_a_copy_and_stays_intact(pair):
    a, b = pair
    large = bytes(range(251)) * (ZERO_COPY_FROM // 251 + 1)
    send_frames(a, [b"h", large])
    header, body = recv_frames(b)
    assert header.bytes == b"h" and body.bytes == large


def test_an_empty_socket_raises_again_without_blocking(pair):
    _, b = pair
    with pytest.raises(zmq.Again):
        recv_frames(b, NOBLOCK)


def test_a_full_queue_refuses_the_whole_message(pair):
    """NOBLOCK against a full queue: zmq.Again before any frame of the message is queued."""
    a, b = pair
    a.setsockopt(zmq.SNDHWM, 1)
    b.setsockopt(zmq.RCVHWM, 1)
    sent = 0
    with pytest.raises(zmq.Again):
        for sent in range(10_000):
            send_frames(a, [b"h", b"%d" % sent], NOBLOCK)
    received = []
    while True:
        try:
            received.append([f.bytes for f in recv_frames(b, NOBLOCK)])
        except zmq.Again:
            break
    assert received == [[b"h", b"%d" % i] for i in range(sent)]     # whole messages, none cut
