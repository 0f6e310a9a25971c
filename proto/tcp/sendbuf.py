"""The send queue: the bytes from SND.UNA on, as Linux's sk_write_queue holds them.

The chunks that send() handed over are kept as they came (immutable bytes, or
read-only views of them) instead of one bytearray: appending never moves what
is queued, dropping what the peer acknowledged never copies (a bytearray
whose front was deleted copies all of itself when it next grows), and a
segment that lies inside one chunk is a view of it, not a copy.  Small writes
are gathered into one chunk, so a stream of one-byte sends stays one chunk.
"""
from __future__ import annotations

from collections import deque

GATHER_BELOW = 4096        # writes smaller than this are copied into a shared chunk
GATHER_MAX = 65536         # ... until it holds this many bytes


class SendBuffer:
    __slots__ = ("_chunks", "_head", "_len", "total")

    def __init__(self) -> None:
        self._chunks: deque = deque()     # bytes, read-only memoryviews, or a bytearray being gathered
        self._head = 0                    # bytes of _chunks[0] already acknowledged
        self._len = 0
        self.total = 0                    # bytes ever appended: the stream's length (what tcpd's store counts)

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def append(self, data) -> None:
        size = len(data)
        if not size:
            return
        chunks = self._chunks
        if size < GATHER_BELOW:
            last = chunks[-1] if chunks else None
            if type(last) is bytearray and len(last) + size <= GATHER_MAX:
                last += data
            else:
                chunks.append(bytearray(data))
        elif type(data) is bytes or (type(data) is memoryview and data.readonly):
            chunks.append(data)
        else:
            chunks.append(bytes(data))    # the caller may change it later
        self._len += size
        self.total += size

    def consume(self, n: int) -> None:
        """Drop the first `n` bytes (acknowledged)."""
        chunks = self._chunks
        self._len -= n
        n += self._head
        while chunks and n >= len(chunks[0]):
            n -= len(chunks.popleft())
        self._head = n if chunks else 0

    def clear(self) -> None:
        self._chunks.clear()
        self._head = self._len = 0

    def slice(self, start: int, end: int):
        """Bytes [start, end) of the queue: a view when they lie in one immutable chunk."""
        if end <= start:
            return b""
        start += self._head
        end += self._head
        parts = []
        for chunk in self._chunks:
            size = len(chunk)
            if start < size:
                if type(chunk) is bytearray:          # still gathering: may grow, so never lend it
                    parts.append(bytes(chunk[start:min(end, size)]))
                elif end <= size and not parts:
                    return memoryview(chunk)[start:end]
                else:
                    parts.append(memoryview(chunk)[start:min(end, size)])
                if end <= size:
                    break
                start = 0
            else:
                start -= size
            end -= size
        return parts[0] if len(parts) == 1 else b"".join(parts)
