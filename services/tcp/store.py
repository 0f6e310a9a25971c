"""tcpd's store: the TCP state that outlives the tcpd process (docs/tcpd-recovery.md).

One append-only journal, `RUN/tcp.journal`, written by one tcpd at a time.
Each commit is one record holding a list of entries, written with one
`writev` before anything the commit covers leaves tcpd (segments to ipd,
answers to libsock): what the peer was acknowledged and what `send` was told
was taken are in the file first.  A SIGKILL can stop a write part way: a
record is framed (magic, length, pickled entries, length again), and the first
record that is not whole ends the journal; the load truncates it away, so a
commit is in the store entirely or not at all.  When the journal has grown
well past what is live, the live state is written to a new file that replaces
it atomically (`os.replace`).

Entries:
    ("eng", {...})               the engine's secret, next id, the incarnations whose sockets it holds
    ("cb", sid, block)           a control block (proto/tcp/checkpoint.py)
    ("snd", sid, start, bytes)   the send stream's bytes from offset `start`
    ("rcv", sid, start, bytes)   the received stream's bytes from offset `start`
    ("rd", sid, total)           the application has been answered the received stream up to `total`
    ("gone", sid)                the socket is no more
    ("sh", sid, value)           what tcpd's shell keeps of the socket: its holders, its watchers
    ("ch", identity, kind, value) a libsock channel's last message, last answer, or asleep call (channels.py)
"""
from __future__ import annotations

import os
import pickle
import struct
from dataclasses import dataclass, field

from proto.tcp import checkpoint

MAGIC = b"NSJ1"
HEAD = struct.Struct("<4sI")
TAIL = struct.Struct("<I")
BLOCK_REFRESH = 1.0        # a moving connection's control block is written at least this often
COMPACT_FROM = 32 << 20    # the journal is rewritten once past this size and four times what is live


class Journal:
    """Records appended to one file, each whole or (after a kill) cut off and dropped."""

    def __init__(self, path: str):
        self.path = path
        self.fd = -1
        self.size = 0

    def load(self) -> list[list]:
        """Every whole record, in order; the file is cut after the last whole one."""
        records = []
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            data = b""
        pos, end = 0, len(data)
        while pos + HEAD.size <= end:
            magic, length = HEAD.unpack_from(data, pos)
            stop = pos + HEAD.size + length
            if magic != MAGIC or stop + TAIL.size > end or TAIL.unpack_from(data, stop)[0] != length:
                break
            try:
                records.append(pickle.loads(data[pos + HEAD.size:stop]))
            except Exception:
                break
            pos = stop + TAIL.size
        self._open(truncate_at=pos)
        return records

    def _open(self, truncate_at: int) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.ftruncate(self.fd, truncate_at)
        os.lseek(self.fd, truncate_at, os.SEEK_SET)
        self.size = truncate_at

    @staticmethod
    def frame(entries: list) -> list:
        blob = pickle.dumps(entries, protocol=pickle.HIGHEST_PROTOCOL)
        return [HEAD.pack(MAGIC, len(blob)), blob, TAIL.pack(len(blob))]

    def append(self, entries: list) -> None:
        parts = self.frame(entries)
        want = sum(map(len, parts))
        done = os.writev(self.fd, parts)
        if done != want:                       # (a regular file: only a full disk does this)
            rest = b"".join(parts)[done:]
            while rest:
                rest = rest[os.write(self.fd, rest):]
        self.size += want

    def rewrite(self, entries: list) -> None:
        """Replace the journal by one record of `entries`, atomically."""
        new = self.path + ".new"
        with open(new, "wb") as f:
            for part in self.frame(entries):
                f.write(part)
        os.replace(new, self.path)
        self._open(truncate_at=os.path.getsize(self.path))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass(slots=True)
class _Written:
    """What the journal holds of one socket: how far its streams are written, when its block was."""
    snd: int = 0
    rcv: int = 0
    read: int = 0
    block_at: float = float("-inf")
    shell: object = None


@dataclass(slots=True)
class Stream:
    """A byte stream being read back: chunks at their offsets."""
    chunks: list = field(default_factory=list)     # [(start, bytes)]
    end: int = 0

    def put(self, start: int, data: bytes) -> None:
        self.chunks.append((start, data))
        self.end = max(self.end, start + len(data))

    def drop_before(self, offset: int) -> None:
        self.chunks = [(s, d) for s, d in self.chunks if s + len(d) > offset]

    def range(self, start: int, end: int) -> bytes:
        """Bytes [start, end); ValueError if the journal lacks some."""
        out = bytearray()
        pos = start
        for s, d in sorted(self.chunks, key=lambda c: c[0]):
            if s + len(d) <= pos:
                continue
            if s > pos:
                break
            out += d[pos - s:end - s]
            pos = s + len(d)
            if pos >= end:
                break
        if start + len(out) < end:
            raise ValueError(f"the stream lacks bytes {start + len(out)}..{end}")
        return bytes(out)


@dataclass(slots=True)
class Recovered:
    """One socket as read back from the journal."""
    block: dict | None = None
    snd: Stream = field(default_factory=Stream)
    rcv: Stream = field(default_factory=Stream)
    read: int = 0
    shell: object = None


class TcpStore:
    def __init__(self, path: str):
        self.journal = Journal(path)
        self._written: dict[int, _Written] = {}
        self._channels: dict[bytes, tuple] = {}       # channel states to write at the next commit
        self._eng: dict | None = None
        self.commits = 0
        self._compact_check = COMPACT_FROM
        # set by tcpd: what a compaction writes besides the sockets
        self.engine_record: dict = {}
        self.channel_states: dict = {}

    # ---------------------------------------------------------------- reading back

    def load(self) -> tuple[dict, dict[int, Recovered], dict[tuple[bytes, str], object]]:
        """(engine record, sockets, channel entries {(identity, kind): value}) from the journal."""
        eng: dict = {}
        socks: dict[int, Recovered] = {}
        channels: dict[tuple[bytes, str], object] = {}
        for entries in self.journal.load():
            for entry in entries:
                kind = entry[0]
                if kind == "snd" or kind == "rcv":
                    rec = socks.setdefault(entry[1], Recovered())
                    getattr(rec, kind).put(entry[2], entry[3])
                elif kind == "cb":
                    rec = socks.setdefault(entry[1], Recovered())
                    rec.block = entry[2]
                    rec.snd.drop_before(checkpoint.send_stream_start(entry[2]))
                elif kind == "rd":
                    rec = socks.setdefault(entry[1], Recovered())
                    rec.read = entry[2]
                    rec.rcv.drop_before(entry[2])
                elif kind == "sh":
                    socks.setdefault(entry[1], Recovered()).shell = entry[2]
                elif kind == "gone":
                    socks.pop(entry[1], None)
                elif kind == "ch":
                    channels[(entry[1], entry[2])] = entry[3]
                elif kind == "eng":
                    eng = entry[1]
        return eng, socks, channels

    def restore(self, rec: Recovered, now: float):
        """The connection `rec` holds (checkpoint.restore); ValueError if it cannot be made whole."""
        block = rec.block
        if block is None:
            raise ValueError("no control block")
        start = checkpoint.send_stream_start(block)
        snd = rec.snd.range(start, max(rec.snd.end, block["_snd"][0]))
        rcv_total = max(rec.rcv.end, block["_rcv"][0])
        unread = rec.rcv.range(rec.read, rcv_total) if rcv_total > rec.read else b""
        conn = checkpoint.restore(block, snd, start + len(snd), unread, rcv_total, rec.read, now)
        self._written[conn.id] = _Written(conn.send_buffer.total, rcv_total, rec.read, now, rec.shell)
        return conn

    # ---------------------------------------------------------------- writing

    def set_engine(self, record: dict) -> None:
        self._eng = record

    def channel(self, identity: bytes, kind: str, value) -> None:
        self._channels[(identity, kind)] = value

    def commit(self, engine, now: float, shell=None) -> None:
        """Write what changed since the last commit: before anything it covers leaves tcpd.
        `shell(sid)`: what tcpd's shell keeps of a socket (small, compared with what was written)."""
        touched, active = engine.take_changes()
        if not (touched or active or self._channels or self._eng):
            return
        entries: list = []
        if self._eng is not None:
            entries.append(("eng", self._eng))
            self._eng = None
        conns, written = engine.conns, self._written
        for sid in touched | active if touched else active:
            conn = conns.get(sid)
            w = written.get(sid)
            if conn is None:
                if w is not None:
                    entries.append(("gone", sid))
                    del written[sid]
                continue
            if w is None:
                w = written[sid] = _Written()
            self._streams(entries, sid, conn, w)
            if shell is not None:
                kept = shell(sid)
                if kept != w.shell:
                    entries.append(("sh", sid, kept))
                    w.shell = kept
            if sid in touched or now - w.block_at >= BLOCK_REFRESH:
                entries.append(("cb", sid, checkpoint.snapshot(conn)))
                w.block_at = now
        if self._channels:
            entries.extend(("ch", identity, kind, value) for (identity, kind), value in self._channels.items())
            self._channels = {}
        if entries:
            self.journal.append(entries)
            self.commits += 1
            if self.journal.size > self._compact_check:
                self._compact(engine, now, shell)

    @staticmethod
    def _streams(entries: list, sid: int, conn, w: _Written) -> None:
        """The bytes each stream gained since the journal last had it."""
        sb, rb = conn.send_buffer, conn.recv_buffer
        if sb.total != w.snd:
            n = min(sb.total - w.snd, len(sb))      # (more: acknowledged already, in the same batch)
            entries.append(("snd", sid, sb.total - n, bytes(sb.slice(len(sb) - n, len(sb)))))
            w.snd = sb.total
        if rb.total != w.rcv:
            # (more than is unread: a loopback segment read in the same batch; its answer, in the
            # channel's entry, holds what was read)
            n = min(rb.total - w.rcv, rb.length)
            entries.append(("rcv", sid, rb.total - n, rb.tail(n)))
            w.rcv = rb.total
        if rb.total_read != w.read:
            entries.append(("rd", sid, rb.total_read))
            w.read = rb.total_read

    def _compact(self, engine, now: float, shell=None) -> None:
        live = sum(len(c.send_buffer) + c.recv_buffer.length for c in engine.conns.values())
        if self.journal.size < 4 * live:
            self._compact_check = self.journal.size * 2
            return
        self.journal.rewrite(self.everything(engine, now, shell))
        self._compact_check = max(COMPACT_FROM, 4 * live)

    def everything(self, engine, now: float, shell=None) -> list:
        """The whole live state as one commit's entries (what a compaction writes)."""
        entries: list = [("eng", self.engine_record)]
        for identity, state in self.channel_states.items():
            entries.append(("ch", identity, "last", state.last))
            entries.append(("ch", identity, "answer", state.answer))
            entries.append(("ch", identity, "progress", state.progress))
        self._written = {}
        for sid, conn in engine.conns.items():
            sb, rb = conn.send_buffer, conn.recv_buffer
            entries.append(("cb", sid, checkpoint.snapshot(conn)))
            entries.append(("snd", sid, sb.total - len(sb), bytes(sb.slice(0, len(sb)))))
            entries.append(("rcv", sid, rb.total - rb.length, rb.tail(rb.length)))
            entries.append(("rd", sid, rb.total_read))
            kept = shell(sid) if shell is not None else None
            if kept is not None:
                entries.append(("sh", sid, kept))
            self._written[sid] = _Written(sb.total, rb.total, rb.total_read, now, kept)
        return entries

    def close(self) -> None:
        self.journal.close()
