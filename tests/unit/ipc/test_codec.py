"""The message vocabulary: every message round-trips; every malformed form is refused with its reason."""
from __future__ import annotations

import math

import msgpack
import pytest
from hypothesis import given, strategies as st

from proto.ipc import codec
from proto.ipc.codec import MessageError
from proto.ipc.messages import (ALL_MESSAGES, VERSION, Call, Control, ControlReply, DeviceReceived,
                                DeviceTransmit, Hello, Readiness, Reply, SegmentsReceived, SegmentsTransmit, TimerFired,
                                TimerSet)
from proto.ipc.messages import (DatagramCall, DatagramReply, DatagramsReceived, DatagramsTransmit,
                                IcmpErrorsReceived, PortUnreachable)

SAMPLES = [
    Hello("ipd", "ab12cd34", 4242),
    DeviceReceived(payload=(b"\x45" * 20, b"\x45" * 40)),
    DeviceTransmit(payload=(b"packet",)),
    SegmentsReceived([[b"\xc6\x12\x00\x01", b"\xc6\x12\x00\x02"]], payload=(b"segment",)),
    SegmentsTransmit([[b"\xc6\x12\x00\x02", b"\xc6\x12\x00\x01"]], payload=(b"segment",)),
    TimerSet("tcpd", [[[3, "retransmit"], 12.5], [[3, "delayed_ack"], None]]),
    TimerFired([[[3, "retransmit"], 12.5]]),
    Call(7, "send", ["ab12cd34", 3], [0], None, payload=(b"data",)),
    Reply(7, 0, 4, "ab12cd34", 65536),
    Reply(8, 11, None, "ab12cd34", 0, [3, 0x4]),
    Readiness([[3, 2, 0x1 | 0x4]]),
    Control(1, "stats", {}),
    ControlReply(1, True, {"in_receives": 3}),
]
SAMPLES += [       # UDP
    DatagramsReceived([[b"\xc6\x12\x00\x01", b"\xc6\x12\x00\x02", b"\x45" * 20]], [0], [], payload=(b"dgram",)),
    DatagramsTransmit([[b"\xc6\x12\x00\x02", b"\xc6\x12\x00\x01"]], payload=(b"dgram",)),
    PortUnreachable([b"\x45" * 28]),
    IcmpErrorsReceived([[3, 3, b"\x45" * 28]]),
    DatagramCall(7, "sendto", 1 << 40, ["198.18.0.1", 53, 0], None, payload=(b"query",)),
    DatagramReply(7, 0, [5, None], "ab12cd34"),
]


def test_every_message_has_a_sample():
    assert {type(m) for m in SAMPLES} == set(ALL_MESSAGES)


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: m.OP)
def test_round_trip(msg):
    frames = codec.encode(msg)
    assert frames[1:] == list(msg.payload)          # payload travels as its own frames, untouched
    assert codec.decode(frames) == msg


def _frames(*header):
    return [msgpack.packb(list(header), use_bin_type=True)]


@pytest.mark.parametrize("frames, reason", [
    ([], "empty"),
    ([b"\xc1"], "bad_encoding"),                      # 0xc1 is never valid msgpack
    ([msgpack.packb({"v": 1})], "bad_envelope"),
    (_frames(1), "bad_envelope"),
    (_frames(VERSION + 1, "hello", "ipd", "x", 1), "bad_version"),
    (_frames(VERSION, "launch_missiles"), "unknown_op"),
    (_frames(VERSION, 5), "unknown_op"),
    (_frames(VERSION, "hello", "ipd", "x"), "bad_arity"),
    (_frames(VERSION, "hello", "ipd", "x", "not a pid"), "bad_field"),
    (_frames(VERSION, "hello", "ipd", "x", True), "bad_field"),       # a bool is not a pid
    (_frames(VERSION, "timer_set", "tcpd", "not a list"), "bad_field"),
])
def test_malformed_is_refused_with_reason(frames, reason):
    with pytest.raises(MessageError) as caught:
        codec.decode(frames)
    assert caught.value.reason == reason


@given(st.binary(max_size=64), st.lists(st.binary(max_size=8), max_size=3))
def test_random_frames_never_raise_anything_else(header, payload):
    try:
        codec.decode([header, *payload])
    except MessageError:
        pass


# ---- nested shapes and ranges: each message's problem() (issue 15) --------------------------
ADDR = b"\xc6\x12\x00\x01"


def _frames(op, *fields, frames=()):
    return [msgpack.packb([1, op, *fields], use_bin_type=True), *frames]


@pytest.mark.parametrize("frames", [
    _frames("tcp_rx", [[ADDR]], [], frames=(b"x",)),                   # too many values to unpack
    _frames("tcp_rx", [[ADDR, ADDR, ADDR]], [], frames=(b"x",)),
    _frames("tcp_rx", [["a", "b"]], [], frames=(b"x",)),
    _frames("tcp_rx", [[ADDR, ADDR]], [[1]], frames=(b"x",)),           # an unhashable index
    _frames("tcp_rx", [[ADDR, ADDR]], [5], frames=(b"x",)),             # a frame that is not there
    _frames("tcp_rx", [[ADDR, ADDR]], [], frames=()),                   # more addresses than frames
    _frames("tcp_tx", [[1, 2]], frames=(b"x",)),                        # TypeError in ipd
    _frames("tcp_tx", [7], frames=(b"x",)),
    _frames("timer_fired", [[1, 2, 3]]),                                # too many values to unpack
    _frames("timer_fired", [[[1, "retransmit"], math.nan]]),
    _frames("timer_fired", [[[{}], 1.0]]),
    _frames("timer_set", "tcpd", [[[1, "x"], math.inf]]),
    _frames("timer_set", "tcpd", [[[[1]], 1.0]]),                       # an unhashable key
    _frames("dev_rx", [-1], frames=(b"x",)),
    _frames("call", -(1 << 63), "recv", None, [], None),               # (negative: a numbered post)
    _frames("call", 1 << 63, "recv", None, [], None),
    _frames("reply", 1, -5, None, "abc", 0, None),
    _frames("reply", 1, 0, None, "abc", 0, [1]),
    _frames("ready", [[1, 2]]),
    _frames("ctl", 1, "stats", {1: 2}),
    _frames("hello", "tcpd", "", 1),
])
def test_nested_shapes_and_ranges_are_checked(frames):
    with pytest.raises(MessageError) as info:
        codec.decode(frames)
    assert info.value.reason == "shape"


def test_well_formed_messages_still_pass():
    assert codec.decode(_frames("tcp_rx", [[ADDR, ADDR]], [0], frames=(b"x",))).addresses == [[ADDR, ADDR]]
    assert codec.decode(_frames("timer_set", "tcpd", [[[1, "retransmit"], None], [[2, "x"], 5.5]])).owner == "tcpd"
    assert codec.decode(_frames("timer_fired", [[[1, "retransmit"], 5]])).entries
    assert codec.decode(_frames("call", 0, "send", ["abc", 3], [0], None, frames=(b"d",))).op == "send"
