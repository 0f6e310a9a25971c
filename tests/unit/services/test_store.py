"""tcpd's store (services/tcp/store.py): a commit is in the journal whole or not at all, wherever
the writer dies; and an engine rebuilt from it carries its connections on as if it had not died."""
from __future__ import annotations

import hashlib
import os
import random
import signal
import time

import pytest

from proto.tcp.engine import TcpEngine, TcpError
from proto.tcp.state import State
from services.tcp import store as store_module
from services.tcp.store import Journal, TcpStore

from tests.unit.tcp.link import ADDR_A, ADDR_B, Link
from tests.unit.tcp.test_two_engines import open_pair


def test_a_journal_cut_anywhere_reads_back_the_whole_records_before_the_cut(tmp_path):
    """The writer killed at every byte of a write: what loads is exactly the records that were
    whole, and the file is cut there, so the next record appends readably."""
    path = str(tmp_path / "j")
    records = [[("rd", 1, n), ("snd", 1, n * 10, bytes([n]) * (n * 7 % 50))] for n in range(12)]
    journal = Journal(path)
    journal.load()
    ends = []
    for record in records:
        journal.append(record)
        ends.append(journal.size)
    journal.close()
    whole = open(path, "rb").read()
    for cut in range(len(whole) + 1):
        with open(path, "wb") as f:
            f.write(whole[:cut])
        again = Journal(path)
        got = again.load()
        complete = sum(end <= cut for end in ends)
        assert got == records[:complete], cut
        again.append([("gone", 9)])             # appends after the last whole record
        again.close()
        assert Journal(path).load() == records[:complete] + [[("gone", 9)]], cut


def test_a_writer_killed_at_random_moments_leaves_whole_records(tmp_path):
    """The same with real kills: a child appends numbered records as fast as it can and is
    SIGKILLed; every record read back is whole and they run 0, 1, 2, ... without a gap."""
    path = str(tmp_path / "j")
    rng = random.Random(7)
    seen = 0
    for _ in range(15):
        pid = os.fork()
        if pid == 0:                                  # the writer
            try:
                journal = Journal(path)
                n = len(journal.load())
                while True:
                    journal.append([("n", n), ("pad", os.urandom(rng.randrange(1, 20000)))])
                    n += 1
            finally:
                os._exit(1)
        time.sleep(rng.uniform(0.005, 0.05))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        numbers = [record[0][1] for record in Journal(path).load()]
        assert numbers == list(range(len(numbers)))
        assert len(numbers) >= seen
        seen = len(numbers)
    assert seen > 0


class DurableB:
    """Engine B of a Link as tcpd runs it: its store commits before its effects leave, and it can
    die (between any two steps, or in the middle of handling a segment) and come back."""

    def __init__(self, link: Link, path: str):
        self.link, self.path = link, path
        self.store = TcpStore(path)
        self.store.load()
        self._wire(link.b)
        self.deaths = 0

    def _wire(self, engine: TcpEngine) -> None:
        take = engine.take_effects

        def take_effects():
            self.store.commit(engine, self.link.now)
            return take()
        engine.take_effects = take_effects
        self.store.engine_record = {"secret": engine.cx.key, "next_id": engine.cx.next_id, "lineage": ["x"]}
        self.store.set_engine(self.store.engine_record)

    def commit(self) -> None:
        self.store.commit(self.link.b, self.link.now)

    def die(self) -> None:
        """What tcpd's death and its successor do: the old engine's uncommitted work and
        unsent effects are gone, the new one starts from the store, its timers armed again."""
        link = self.link
        self.deaths += 1
        self.store.close()
        self.store = TcpStore(self.path)
        eng, socks, _channels = self.store.load()
        engine = TcpEngine(link.b.config, ADDR_B, eng["secret"])
        engine.strict = True
        engine.adopt([self.store.restore(rec, link.now) for rec in socks.values()], eng["next_id"])
        engine.cx.touched, engine.cx.active = set(), set()
        link.b = link.engines[ADDR_B] = engine
        for key in [k for k in link.timers if k[0] == ADDR_B]:
            del link.timers[key]
        for key, deadline in engine.armed_timers().items():
            link.timers[(ADDR_B, key)] = deadline
        self._wire(engine)


@pytest.mark.parametrize("seed", range(6))
def test_an_engine_rebuilt_from_its_store_carries_both_directions_on(tmp_path, seed):
    rng = random.Random(seed)
    link = Link(seed=seed, loss=0.02 if seed % 2 else 0.0)
    cs, ls, ss = open_pair(link)
    durable = DurableB(link, str(tmp_path / "tcp.journal"))
    durable.commit()
    to_b, to_a = rng.randbytes(300_000), rng.randbytes(200_000)
    got_b, got_a = bytearray(), bytearray()
    sent = {"a": 0, "b": 0}
    deaths_at = set(rng.sample(range(20, 400), 4))
    handled = [0]

    # B dies in the middle of handling a segment now and then: what it did is lost with it
    def segment_in_of(engine):
        inner = engine.segment_in

        def segment_in(now, src, dst, seg):
            inner(now, src, dst, seg)
            handled[0] += 1
            if handled[0] in deaths_at:
                durable.die()
                link.b.segment_in = segment_in_of(link.b)
        return segment_in
    link.b.segment_in = segment_in_of(link.b)

    def app():
        for side, data, sid, got in (("a", to_b, cs, None), ("b", to_a, ss, None)):
            engine = link.a if side == "a" else link.b
            if sent[side] < len(data):
                try:
                    sent[side] += engine.send(link.now, sid, data[sent[side]:sent[side] + 16384], 0)
                except TcpError:
                    pass
                if side == "b":
                    durable.commit()          # tcpd answers send only once the store has it
        for engine, sid, got in ((link.a, cs, got_a), (link.b, ss, got_b)):
            try:
                data = engine.recv(link.now, sid, 65536, 0)
            except TcpError:
                continue
            if engine is link.b:
                durable.commit()              # ... and recv
            got.extend(data)

    link.run(duration=120, app=app, until=lambda: len(got_a) == len(to_a) and len(got_b) == len(to_b))
    assert durable.deaths >= 1
    assert hashlib.sha256(got_b).digest() == hashlib.sha256(to_b).digest()
    assert hashlib.sha256(got_a).digest() == hashlib.sha256(to_a).digest()
    assert link.b.conns[ss].state is State.ESTABLISHED and link.b.conns[ls].state is State.LISTEN
    assert not [seg for _, src, seg, _ in link.log if int(seg.flags) & 0x04]      # no reset either way


def test_a_compaction_keeps_the_live_state_only(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "COMPACT_FROM", 50_000)
    link = Link()
    cs, ls, ss = open_pair(link)
    durable = DurableB(link, str(tmp_path / "tcp.journal"))
    durable.store._compact_check = 50_000
    payload = bytes(range(256)) * 64
    for _ in range(40):                            # 640 KB through B, read as it comes
        link.call(ADDR_A, "send", cs, payload, 0)
        link.run(duration=1)
        while True:
            try:
                link.b.recv(link.now, ss, 1 << 20, 0)
            except TcpError:
                break
            durable.commit()
    assert durable.store.journal.size < 200_000     # rewritten: not every byte that went through
    link.call(ADDR_A, "send", cs, b"after", 0)
    link.run(duration=1)
    durable.die()
    assert link.b.recv(link.now, ss, 100, 0) == b"after"
