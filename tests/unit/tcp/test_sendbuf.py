"""The send queue: chunks kept as send() gave them, views where a range lies in one."""
import random

from proto.tcp.sendbuf import GATHER_BELOW, SendBuffer


def test_a_range_inside_one_large_chunk_is_a_view_not_a_copy():
    data = bytes(range(256)) * 64                        # 16 KiB: kept as it came
    buf = SendBuffer()
    buf.append(data)
    part = buf.slice(100, 5000)
    assert isinstance(part, memoryview) and part.obj is data and part == data[100:5000]


def test_small_writes_are_gathered_and_copied_out():
    buf = SendBuffer()
    for i in range(1000):
        buf.append(bytes([i & 0xFF]))
    assert len(buf) == 1000 and len(buf._chunks) == 1
    assert buf.slice(0, 1000) == bytes(i & 0xFF for i in range(1000))
    assert isinstance(buf.slice(0, 10), bytes)           # never a view of a chunk that may grow


def test_a_mutable_write_is_copied():
    data = bytearray(b"m" * GATHER_BELOW * 2)
    buf = SendBuffer()
    buf.append(data)
    data[:4] = b"XXXX"
    assert buf.slice(0, 4) == b"mmmm"


def test_matches_a_bytearray_under_random_appends_consumes_and_slices():
    rng = random.Random(5)
    buf, model = SendBuffer(), bytearray()
    for _ in range(3000):
        action = rng.random()
        if action < 0.4:
            chunk = rng.randbytes(rng.choice([1, 7, 100, 3000, 5000, 70000]))
            buf.append(chunk if rng.random() < 0.7 else memoryview(chunk)[1:])
            model += chunk if len(buf) == len(model) + len(chunk) else chunk[1:]
        elif action < 0.6 and model:
            n = rng.randint(0, len(model))
            buf.consume(n)
            del model[:n]
        elif model:
            start = rng.randint(0, len(model))
            end = rng.randint(start, min(len(model), start + 70000))
            assert bytes(buf.slice(start, end)) == bytes(model[start:end])
        assert len(buf) == len(model)
    buf.clear()
    assert not buf and buf.slice(0, 10) == b""
