"""Encoding, decoding and validation of inter-process messages.

`encode(msg)` gives the list of frames to send; `decode(frames)` gives the
message back or raises `MessageError` with a short reason (the name the
receiving service counts it under, as ipc_bad_<reason>).  A decoded message
has passed its declaration's `problem()` too (nested shapes and ranges:
"shape"), so no handler meets a field of a shape it does not expect.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import msgpack

from proto.ipc.messages import ALL_MESSAGES, VERSION, Message


class MessageError(ValueError):
    """A message that cannot be accepted; `reason` names its drop counter."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


_ANY = object()
_TYPE_CHECKS: dict[Any, Any] = {
    "int": int, "str": str, "float": (int, float), "bool": bool, "bytes": bytes,
    "list": list, "dict": dict, "Any": _ANY,
}


def _field_specs(cls: type[Message]) -> tuple[tuple[str, Any], ...]:
    specs = []
    for f in dataclasses.fields(cls):
        if f.name == "payload":
            continue
        specs.append((f.name, _TYPE_CHECKS[f.type if isinstance(f.type, str) else f.type.__name__]))
    return tuple(specs)


_REGISTRY: dict[str, tuple[type[Message], tuple[tuple[str, Any], ...]]] = {
    cls.OP: (cls, _field_specs(cls)) for cls in ALL_MESSAGES
}

_packer = msgpack.Packer(use_bin_type=True)


def encode(msg: Message) -> list:
    """The frames of `msg`: its header, then each payload frame as it is (no copy)."""
    cls, specs = _REGISTRY[msg.OP]
    header = [VERSION, msg.OP]
    header.extend(getattr(msg, name) for name, _ in specs)
    return [_packer.pack(header), *msg.payload]


def decode(frames: list) -> Message:
    """The message in `frames` (header first), validated; MessageError if it is not one."""
    if not frames:
        raise MessageError("empty")
    try:
        header = msgpack.unpackb(frames[0], raw=False, use_list=True, strict_map_key=False)
    except Exception as exc:          # msgpack raises several unrelated types
        raise MessageError("bad_encoding", str(exc)) from None
    if not isinstance(header, list) or len(header) < 2:
        raise MessageError("bad_envelope")
    if header[0] != VERSION:
        raise MessageError("bad_version", repr(header[0]))
    entry = _REGISTRY.get(header[1]) if isinstance(header[1], str) else None
    if entry is None:
        raise MessageError("unknown_op", repr(header[1]))
    cls, specs = entry
    values = header[2:]
    if len(values) != len(specs):
        raise MessageError("bad_arity", f"{header[1]} wants {len(specs)} fields, got {len(values)}")
    for (name, expected), value in zip(specs, values):
        if expected is _ANY:
            continue
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise MessageError("bad_field", f"{header[1]}.{name}: {type(value).__name__}")
    msg = cls(*values, payload=tuple(frames[1:]))
    problem = msg.problem()
    if problem is not None:
        raise MessageError("shape", f"{header[1]}: {problem}")
    return msg
