"""The receive side's buffer and window, in one place (smoltcp's rx_buffer + Assembler; gVisor's
receiver, which computes its own window).

`RecvBuffer` holds the in-order bytes not yet read (Linux's receive_queue, read
from `copied_seq` on) and the out-of-order queue, with take/peek for
tcp_recvmsg, the SACK blocks the queue gives, and the state of receive-buffer
autotuning.  The functions below compute the window offered to the peer from
the buffer and the connection's receive sequence variables (RCV.NXT, the
advertised edge, the window scale).
"""
from __future__ import annotations

from collections import deque

from proto.tcp import seqnum

MASK = seqnum.MASK
HALF = seqnum.HALF
# how far autotuning grows a buffer the application did not size (Linux tcp_rmem[2])
RCVBUF_AUTOTUNE_MAX = 6 * 1024 * 1024


class RecvBuffer:
    __slots__ = ("chunks", "length", "offset", "ooo", "ooo_len", "ooo_last", "space_copied", "space_time",
                 "total", "total_read")

    def __init__(self) -> None:
        self.chunks: deque = deque()     # in-order bytes chunks not yet read
        self.length = 0                  # bytes in them, less what was read of the first
        self.offset = 0                  # bytes of chunks[0] already read
        self.ooo: list[tuple[int, bytes]] = []   # out-of-order [(seq, bytes)], sorted, non-overlapping
        self.ooo_len = 0
        self.ooo_last: int | None = None         # seq of the latest out-of-order arrival (first SACK block)
        self.space_copied = 0            # bytes read since space_time (autotuning, Linux "DRS")
        self.space_time = 0.0
        self.total = 0                   # in-order bytes ever appended, and ever read (tcpd's store counts
        self.total_read = 0              # the stream by these: services/tcp/store.py)

    def __len__(self) -> int:
        return self.length

    # ---------------------------------------------------------------- in order
    def append(self, data: bytes) -> None:
        self.chunks.append(data)
        self.length += len(data)
        self.total += len(data)

    def take(self, size: int) -> bytes:
        """Read up to `size` bytes (tcp_recvmsg's copy; the caller checked there are some)."""
        q = self.chunks
        off = self.offset
        first = q[0]
        if len(first) - off > size:                          # part of the first chunk
            self.offset = off + size
            self.length -= size
            self.total_read += size
            return first[off:off + size]
        parts = []
        got = 0
        while q and got < size:
            chunk = q[0]
            avail = len(chunk) - off
            want = size - got
            if avail <= want:
                parts.append(chunk[off:] if off else chunk)
                got += avail
                q.popleft()
                off = 0
            else:
                parts.append(chunk[off:off + want])
                got += want
                off += want
        self.offset = off
        self.length -= got
        self.total_read += got
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def peek(self, size: int) -> bytes:
        """What `take(size)` would return, leaving it there (MSG_PEEK)."""
        parts = []
        got = 0
        off = self.offset
        for chunk in self.chunks:
            piece = chunk[off:off + size - got]
            off = 0
            parts.append(piece)
            got += len(piece)
            if got >= size:
                break
        return b"".join(parts)

    def tail(self, size: int) -> bytes:
        """The last `size` unread bytes (what arrived since tcpd's store last looked)."""
        if size > self.length:
            raise ValueError(f"only {self.length} of {size} bytes are unread")
        parts, need = [], size
        for chunk in reversed(self.chunks):
            if need <= 0:
                break
            parts.append(chunk[-need:] if len(chunk) > need else chunk)
            need -= len(parts[-1])
        return b"".join(reversed(parts)) if len(parts) != 1 else bytes(parts[0])

    def discard(self) -> None:
        """Drop what is unread (a close with unread data resets the connection)."""
        self.total_read += self.length
        self.chunks.clear()
        self.length = self.offset = 0

    # ---------------------------------------------------------------- out of order
    def insert_out_of_order(self, rcv_nxt: int, seq: int, data: bytes) -> None:
        """Keep the parts of `data` (at `seq`, beyond RCV.NXT) not already queued."""
        start = seqnum.diff(seq, rcv_nxt)
        end = start + len(data)
        pieces = []
        cur = start
        for bseq, bdata in self.ooo:
            bs = seqnum.diff(bseq, rcv_nxt)
            be = bs + len(bdata)
            if be <= cur:
                continue
            if bs >= end:
                break
            if bs > cur:
                pieces.append((cur, min(bs, end)))
            cur = max(cur, be)
            if cur >= end:
                break
        if cur < end:
            pieces.append((cur, end))
        self.ooo_last = seq
        if not pieces:
            return
        for ps, pe in pieces:
            self.ooo.append(((rcv_nxt + ps) & MASK, data[ps - start:pe - start]))
            self.ooo_len += pe - ps
        self.ooo.sort(key=lambda block: seqnum.diff(block[0], rcv_nxt))

    def deliver_out_of_order(self, rcv_nxt: int) -> int:
        """Move the blocks that now follow RCV.NXT into the in-order queue; the bytes moved."""
        ooo = self.ooo
        moved = 0
        while ooo:
            bseq, data = ooo[0]
            d = seqnum.diff((rcv_nxt + moved) & MASK, bseq)
            if d < 0:
                break
            ooo.pop(0)
            self.ooo_len -= len(data)
            if d >= len(data):
                continue
            if d:
                data = data[d:]
            self.append(data)
            moved += len(data)
        return moved

    def drop_out_of_order(self) -> None:
        self.ooo.clear()
        self.ooo_len = 0

    def sack_blocks(self) -> tuple[tuple[int, int], ...]:
        """The out-of-order queue as SACK blocks (RFC 2018 4): contiguous pieces merged, the block
        holding the latest arrival first, then the others from the highest down; at most 4."""
        blocks: list[list[int]] = []
        for seq, data in self.ooo:
            end = (seq + len(data)) & MASK
            if blocks and blocks[-1][1] == seq:
                blocks[-1][1] = end
            else:
                blocks.append([seq, end])
        latest = self.ooo_last
        first = [b for b in blocks if latest is not None and seqnum.le(b[0], latest) and seqnum.lt(latest, b[1])]
        rest = [b for b in reversed(blocks) if b not in first]
        return tuple((left, right) for left, right in (first + rest)[:4])

    # ---------------------------------------------------------------- autotuning
    def autotune(self, now: float, copied: int, srtt: float | None, rcvbuf: int) -> int:
        """Linux's receive buffer autotuning (tcp_rcv_space_adjust, "DRS"): once per round trip,
        make room for twice what the application read in it.  Returns the buffer's new size."""
        self.space_copied += copied
        if srtt is None or now - self.space_time < srtt:
            return rcvbuf
        want = 2 * self.space_copied
        if want > rcvbuf:
            rcvbuf = min(want, RCVBUF_AUTOTUNE_MAX)
        self.space_copied = 0
        self.space_time = now
        return rcvbuf


# ---------------------------------------------------------------- the window offered to the peer
def choose_wscale(rcvbuf: int) -> int:
    """Smallest shift that lets the 16-bit window field cover `rcvbuf` (RFC 7323, at most 14)."""
    shift = 0
    while shift < 14 and (rcvbuf >> shift) > 0xFFFF:
        shift += 1
    return shift


def rcvbuf_ceiling(conn) -> int:
    """The largest receive buffer this connection may have: its window scale is chosen for it."""
    return conn.so_rcvbuf if conn.rcvbuf_locked else max(conn.so_rcvbuf, RCVBUF_AUTOTUNE_MAX)


def syn_window(conn) -> int:
    """The window a SYN or SYN+ACK offers (never scaled, RFC 7323 2.2)."""
    free = conn.so_rcvbuf - conn.recv_buffer.length
    return 0xFFFF if free > 0xFFFF else max(free, 0)


def _buffer_and_free(conn) -> tuple[int, int]:
    """The receive buffer and its free space, both capped at the largest window the scale can say."""
    rcvbuf = conn.so_rcvbuf
    buf = conn.recv_buffer
    free = rcvbuf - buf.length - buf.ooo_len
    largest = 0xFFFF << conn.rcv_wscale
    if rcvbuf > largest:
        rcvbuf = largest
        if free > largest:
            free = largest
    return rcvbuf, free


def charge(cx, conn) -> int:
    """Bring the engine's count of buffer memory (tcp.mem_max) up to this connection's receive
    and send queues; the headroom left under the cap."""
    buf = conn.recv_buffer
    held = buf.length + buf.ooo_len + len(conn.send_buffer)
    charged = cx.mem_charged.get(conn.id, 0)
    if held != charged:
        cx.mem_held += held - charged
        cx.mem_charged[conn.id] = held
        cx.counters["mem_held"] = cx.mem_held
    return cx.config.mem_max - cx.mem_held


def select_window(conn, headroom: int | None = None) -> int:
    """The 16-bit window field to send now, and move conn.rcv_adv to match.

    The window follows the free receive buffer, but its right edge never moves
    left (RFC 9293 3.8.6.2.2) and only moves right by a worthwhile amount
    (receiver SWS avoidance, RFC 1122 4.2.3.3: min(rcvbuf/2, MSS)).
    """
    rcvbuf, free = _buffer_and_free(conn)
    if headroom is not None and free > headroom:
        free = headroom if headroom > 0 else 0          # tcp.mem_max: the window stops opening
    rcv_nxt = conn.rcv_nxt
    current = (conn.rcv_adv - rcv_nxt) & MASK
    if current >= HALF:
        current = 0
    if free > current:
        threshold = conn.rcv_mss if conn.rcv_mss < rcvbuf // 2 else rcvbuf // 2
        window = free if free - current >= threshold else current
    else:
        window = current
    shift = conn.rcv_wscale
    field = window >> shift
    if (field << shift) < current:
        field += 1                      # round up rather than shrink the offered edge
    if field > 0xFFFF:
        field = 0xFFFF
    edge = (rcv_nxt + (field << shift)) & MASK
    if ((edge - conn.rcv_adv) & MASK) < HALF:
        conn.rcv_adv = edge
    return field


def window_after_read(conn) -> bool:
    """Would an ACK now open the window enough to be worth sending (Linux cleanup_rbuf)?"""
    rcvbuf, free = _buffer_and_free(conn)
    current = conn.rcv_wnd
    threshold = conn.rcv_mss if conn.rcv_mss < rcvbuf // 2 else rcvbuf // 2
    # Only when the window offered has closed to half the buffer or less:
    # above that, the ACKs for arriving data carry the update anyway.
    return free - current >= threshold and current <= rcvbuf // 2
