"""libsock's own cost per posted send and per waited call, two versions of libsock/_rpc.py side
by side in one process (README, signals: the cost of issue 19's bookkeeping).

    git show main:libsock/_rpc.py > /tmp/rpc_old.py
    .venv/bin/python docs/bench/libsock_call_cost.py /tmp/rpc_old.py libsock/_rpc.py

Each version gets its own Stack and channel over a socket that does no I/O (a send does nothing;
a waited call is answered from memory), so only libsock's Python work is timed; batches of the
two alternate, and the medians are printed (the machine is shared and noisy: compare medians of
the per-batch differences, not single runs)."""
from __future__ import annotations

import importlib.util
import statistics
import sys
import time
from pathlib import Path

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from proto.ipc import codec                      # noqa: E402
from proto.ipc.messages import Reply             # noqa: E402

SID = ["inc1", 1 << 40]
BATCHES = 40


class QuietSocket:
    """Takes every frame; answers a waited call from memory."""
    closed = False
    last = 0

    def send(self, frame, flags=0, copy=True):
        if isinstance(frame, bytes) and frame[:1] == b"\x97":      # a Call's header (7 fields)
            self.last = msgpack.unpackb(frame)[2]

    def poll(self, timeout=None):
        return 1

    def recv_multipart(self):
        return codec.encode(Reply(self.last, 0, ["198.18.0.1", 1], "inc1", 1 << 20))


def load(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    stack = module.Stack("/nonexistent")
    channel = module._Channel(stack, QuietSocket(), b"p1.bench", "inc1")
    stack._local.channel = channel
    return stack, channel


def main() -> None:
    versions = {"A": load(sys.argv[1], "rpc_a"), "B": load(sys.argv[2], "rpc_b")}
    data = b"x" * 60
    work = {
        "post": (5000, lambda stack: stack.post("send", SID, [0], data)),
        "call": (3000, lambda stack: stack.call("getsockname", SID, [], 0)),
    }
    for kind, (n, one) in work.items():
        times = {key: [] for key in versions}
        for batch in range(BATCHES):
            for key in ("A", "B") if batch % 2 == 0 else ("B", "A"):
                stack, channel = versions[key]
                start = time.perf_counter()
                for _ in range(n):
                    one(stack)
                times[key].append((time.perf_counter() - start) / n * 1e6)
                channel.unconfirmed.clear()
                channel.handled = channel.seq
        a, b = times["A"], times["B"]
        print(f"{kind}: A median {statistics.median(a):.2f} us, B median {statistics.median(b):.2f} us, "
              f"B-A per batch median {statistics.median([y - x for x, y in zip(a, b)]):+.2f} us")


if __name__ == "__main__":
    main()
