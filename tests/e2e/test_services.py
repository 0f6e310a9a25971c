"""The services as processes: timerd's precision, and malformed messages to every service."""
from __future__ import annotations

import errno
import time

import msgpack
import pytest
import zmq

from proto.ipc import codec
from proto.ipc.messages import Call, Reply, TimerFired, TimerSet

SERVICES = ("nicd", "ipd", "tcpd", "timerd")


def _dealer(stack, service: str, identity: bytes | None = None) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if identity:
        sock.setsockopt(zmq.ROUTING_ID, identity)
    sock.connect(f"ipc://{stack.run_dir}/{service}.sock")
    return sock


def test_timerd_fires_within_10ms(shared_stack):
    """An owner's fires arrive at its own socket, RUN/<owner>.sock, as tcpd's do."""
    inbox = zmq.Context.instance().socket(zmq.ROUTER)
    inbox.setsockopt(zmq.LINGER, 0)
    inbox.bind(f"ipc://{shared_stack.run_dir}/t-owner.sock")
    sock = _dealer(shared_stack, "timerd", b"t-owner")
    try:
        now = time.monotonic()
        deadlines = {("k", i): now + 0.05 + 0.02 * i for i in range(10)}
        sock.send_multipart(codec.encode(TimerSet("t-owner", [[list(k), d] for k, d in deadlines.items()])))
        sock.send_multipart(codec.encode(TimerSet("t-owner", [[["k", 9], None]])))      # cancelled
        sock.send_multipart(codec.encode(TimerSet("../t-owner", [[["k", 0], now]])))    # not a name: dropped
        fired = {}
        while len(fired) < 9 and inbox.poll(2000):
            sender, *frames = inbox.recv_multipart()
            msg = codec.decode(frames)
            arrived = time.monotonic()
            assert sender == b"timerd" and isinstance(msg, TimerFired)
            for key, deadline in msg.entries:
                fired[tuple(key)] = arrived - deadline
        assert set(fired) == set(deadlines) - {("k", 9)}
        assert all(0 <= late < 0.010 for late in fired.values()), fired
        assert not inbox.poll(300)           # the cancelled one never fires
        assert shared_stack.stats()["timerd"]["ipc_bad_timer_owner"] == 1
    finally:
        sock.close(0)
        inbox.close(0)


GARBAGE = [
    [b"\xc1"],                                                   # not msgpack
    [msgpack.packb([99, "hello", "x", "y", 1])],                 # unknown version
    [msgpack.packb([1, "launch_missiles"])],                     # unknown op
    [msgpack.packb([1, "timer_set", "tcpd", "not a list"])],     # bad field
    [msgpack.packb([1, "dev_tx"]), b"\x45\x00"],                 # a runt packet for the device
    [msgpack.packb([1, "tcp_tx", [[b"ab", b"cd"]]]), b"x"],       # bad addresses
    [msgpack.packb([1, "call", 1, "recv", ["nope", 1], [10, 0], 0])],   # a call on no socket
    [msgpack.packb([1, "ctl", 1, "no_such_control", {}])],       # unknown control
    [msgpack.packb({"v": 1})],                                   # wrong envelope
]


@pytest.mark.parametrize("service", SERVICES)
def test_malformed_messages_are_counted_not_fatal(shared_stack, service):
    before = shared_stack.status()[service]["incarnation"]
    sock = _dealer(shared_stack, service)
    try:
        for frames in GARBAGE:
            sock.send_multipart(frames)
    finally:
        sock.close(linger=2000)        # deliver what is queued before closing

    def counted():
        stats = shared_stack.stats()[service]
        return sum(v for k, v in stats.items() if k.startswith("ipc_bad_")) >= 4
    from tests.e2e.conftest import wait_for
    wait_for(counted, 5, 0.05, f"{service} to count the malformed messages")
    after = shared_stack.status()[service]
    assert after["state"] == "RUNNING" and after["incarnation"] == before


@pytest.mark.parametrize("call, expected", [
    (["frobnicate", None, []], "EINVAL"),              # no such socket call (sys_socketcall's default)
    (["recv", ["nope", 1], [10, 0]], "ECONNRESET"),     # a socket of another tcpd incarnation
    (["recv", "garbage", [10, 0]], "EBADF"),            # not a socket id at all
    (["fence", ["x", 0], ["x", 0]], "ECONNRESET"),
])
def test_a_wrong_call_gets_the_errno_linux_would_give(shared_stack, call, expected):
    sock = _dealer(shared_stack, "tcpd")
    try:
        op, sid, args = call
        sock.send_multipart(codec.encode(Call(7, op, sid, args, 0)))
        assert sock.poll(5000), "tcpd did not answer"
        reply = codec.decode(sock.recv_multipart())
    finally:
        sock.close()
    assert isinstance(reply, Reply) and reply.id == 7
    assert errno.errorcode[reply.errno] == expected
