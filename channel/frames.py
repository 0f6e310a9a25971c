"""A message's frames onto and off a ZeroMQ socket, at the cost of the frames alone.

pyzmq's send_multipart and recv_multipart combine its Flag enums and check
their arguments on every call: 2.3 and 3.2 us for a two-frame message on this
machine, against 1.0 and 1.4 us for the same frames sent and received one by
one with the flags as plain ints.  Every message crosses a socket twice, and a
connection is about 25 messages, so the services use these two (libsock sends with
send_frames, and receives with recv_multipart: a signal handler that raises as a
copied frame arrives cannot be lost in a Frame's destructor there).
(This is I/O, so it lives here and not in proto/, which stays pure; libsock and the services both use it.)
"""
from __future__ import annotations

import zmq

NOBLOCK = int(zmq.NOBLOCK)
_MORE = int(zmq.SNDMORE)

ZERO_COPY_FROM = 1 << 16    # a message whose last frame is this large is handed over, not copied
                            # (for small ones a copy is cheaper than zero-copy's bookkeeping)


def send_frames(sock: zmq.Socket, frames: list, flags: int = 0) -> None:
    """send_multipart(frames, flags); raises zmq.Again (NOBLOCK) before any frame leaves, or not at all."""
    copy = len(frames[-1]) < ZERO_COPY_FROM
    send, more, last = sock.send, flags | _MORE, len(frames) - 1
    for i in range(last):
        send(frames[i], more, copy=copy)
    send(frames[last], flags, copy=copy)


def recv_frames(sock: zmq.Socket, flags: int = 0) -> list[zmq.Frame]:
    """recv_multipart(flags, copy=False): the parts of one message as zmq.Frame objects."""
    recv = sock.recv
    frame = recv(flags, copy=False)
    frames = [frame]
    while frame.more:               # the rest of a message arrives with its first part
        frame = recv(flags, copy=False)
        frames.append(frame)
    return frames
