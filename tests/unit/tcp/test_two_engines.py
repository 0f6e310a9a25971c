"""Two engines back to back through a fake link: the seed's worked example, bulk transfers
through loss and reordering, simultaneous open and close."""
import errno
import random

import pytest

from proto.tcp.engine import TcpError
from proto.tcp.state import State

from .link import ADDR_A, ADDR_B, Link


def open_pair(link: Link, port: int = 80, backlog: int = 5):
    """A connects to B's listener; returns (client sid on A, listener sid on B, server sid on B)."""
    ls = link.call(ADDR_B, "socket")
    link.call(ADDR_B, "bind", ls, "0.0.0.0", port)
    link.call(ADDR_B, "listen", ls, backlog)
    cs = link.call(ADDR_A, "socket")
    with pytest.raises(TcpError) as e:
        link.call(ADDR_A, "connect", cs, ADDR_B, port)
    assert e.value.errno == errno.EINPROGRESS
    link.run(duration=5, until=lambda: link.b.conns[ls].accept_queue)
    ss, _ = link.call(ADDR_B, "accept", ls)
    assert link.call(ADDR_A, "connect", cs, ADDR_B, port) is None
    return cs, ls, ss


def test_seed_worked_example_one_byte_window():
    """Window and segment of one byte; '@' is sent (RETRANSMISSION set) and lost; RETRANSMISSION
    expires and '@' is sent again; the receiver sets DELAYED ACK, which expires and sends ACK 2;
    the sender turns RETRANSMISSION off.  (Linux 2.0 had no quick ACKs: tcp.quickacks = 0.)"""
    link = Link(config_b={"rcvbuf": 1, "quickacks": 0})
    cs, ls, ss = open_pair(link)
    sender = link.a.conns[cs]
    receiver = link.b.conns[ss]
    assert sender.snd_wnd == 1
    lost = []
    link.drop = lambda src, seg: src == ADDR_A and seg.payload == b"@" and not lost and not lost.append(seg)

    t0 = link.now
    assert link.call(ADDR_A, "send", cs, b"@") == 1
    first = link.log[-1][2]
    assert first.payload == b"@" and not link.log[-1][3]               # sent, and lost
    assert sender.timers["retransmit"] == pytest.approx(t0 + 1.0)      # RETRANSMISSION set

    link.run(duration=1.0 + link.delay / 2)                            # RETRANSMISSION expires
    again = link.log[-1][2]
    assert again.payload == b"@" and again.seq == first.seq and link.log[-1][3]
    link.run(duration=link.delay)                                      # ... and arrives
    assert receiver.timers["delayed_ack"] is not None                  # DELAYED ACK set
    assert not [s for s in link.segments_from(ADDR_B) if s.ack == (receiver.irs + 2) & 0xFFFFFFFF]
    assert sender.timers["retransmit"] is not None

    link.run(duration=0.2 + link.delay)                                # DELAYED ACK expires
    acks = [s for s in link.segments_from(ADDR_B) if s.ack == (receiver.irs + 2) & 0xFFFFFFFF]
    assert len(acks) == 1 and acks[0].window == 0                      # "ACK 2" (relative to the ISN)
    assert link.b.counters["delayed_acks"] == 1
    assert sender.timers["retransmit"] is None                         # RETRANSMISSION off
    assert sender.snd_una == sender.snd_max
    assert link.call(ADDR_B, "recv", ss, 10) == b"@"


def bulk(link: Link, size: int, reader_chunk: int = 100_000, seed: int = 3):
    rng = random.Random(seed)
    data = {ADDR_A: rng.randbytes(size), ADDR_B: rng.randbytes(size)}
    cs, ls, ss = open_pair(link)
    sids = {ADDR_A: cs, ADDR_B: ss}
    sent = {ADDR_A: 0, ADDR_B: 0}
    got = {ADDR_A: bytearray(), ADDR_B: bytearray()}
    shut = set()
    eof = set()

    def app():
        for addr, eng in link.engines.items():
            sid = sids[addr]
            while sent[addr] < size:
                try:
                    n = eng.send(link.now, sid, data[addr][sent[addr]:sent[addr] + 65536])
                except TcpError as e:
                    assert e.errno == errno.EAGAIN
                    break
                sent[addr] += n
            if sent[addr] == size and addr not in shut:
                eng.shutdown(link.now, sid, 1)
                shut.add(addr)
            while addr not in eof:
                try:
                    chunk = eng.recv(link.now, sid, reader_chunk)
                except TcpError as e:
                    assert e.errno == errno.EAGAIN
                    break
                if not chunk:
                    eof.add(addr)
                    break
                got[addr] += chunk

    link.run(duration=20000, until=lambda: len(eof) == 2, app=app)
    assert bytes(got[ADDR_B]) == data[ADDR_A]
    assert bytes(got[ADDR_A]) == data[ADDR_B]
    for addr in link.engines:
        link.call(addr, "close", sids[addr])
    link.run(duration=3600)
    assert link.a.conns == {} and link.b.by_tuple == {}
    return link


@pytest.mark.parametrize("seed,loss,reorder", [(1, 0.0, 0.0), (2, 0.02, 0.05), (3, 0.05, 0.1), (4, 0.1, 0.1),
                                               (7, 0.2, 0.1)])   # 20 %: both ends go back after RTOs
def test_one_mebibyte_each_way_through_a_lossy_link(seed, loss, reorder):
    link = Link(seed=seed, loss=loss, reorder=reorder, delay=0.005, jitter=0.002)
    bulk(link, 1 << 20)
    if loss:
        assert link.a.counters["retrans_segs"] > 0 and link.b.counters["retrans_segs"] > 0


def test_small_buffers_and_slow_reader_exercise_zero_windows():
    link = Link(config_a={"rcvbuf": 4096, "sndbuf": 8192}, config_b={"rcvbuf": 4096, "sndbuf": 8192},
                seed=5, loss=0.03, reorder=0.05, delay=0.002)
    bulk(link, 200_000, reader_chunk=700)


def test_mss_mismatch_and_window_scaling_through_link():
    link = Link(config_a={"mss": 536, "rcvbuf": 1 << 20}, config_b={"mss": 1460, "rcvbuf": 1 << 20}, seed=9, loss=0.01)
    link = bulk(link, 300_000)
    big = [s for s in link.segments_from(ADDR_B) if s.payload]
    assert max(len(s.payload) for s in big) == 536 - 12     # the MSS, less the timestamp option


def test_simultaneous_open():
    link = Link()
    a = link.call(ADDR_A, "socket")
    b = link.call(ADDR_B, "socket")
    link.call(ADDR_A, "bind", a, "0.0.0.0", 5000)
    link.call(ADDR_B, "bind", b, "0.0.0.0", 6000)
    for addr, sid, port, other in ((ADDR_A, a, 6000, ADDR_B), (ADDR_B, b, 5000, ADDR_A)):
        with pytest.raises(TcpError):
            link.call(addr, "connect", sid, other, port)
    link.run(duration=1)
    ca, cb = link.a.conns[a], link.b.conns[b]
    assert ca.state is State.ESTABLISHED and cb.state is State.ESTABLISHED
    path = [(t.from_state, t.to_state) for t in link.transitions if t.conn_id == a and t.local[0] == ADDR_A]
    assert path == [(State.CLOSED, State.SYN_SENT), (State.SYN_SENT, State.SYN_RCVD),
                    (State.SYN_RCVD, State.ESTABLISHED)]
    assert link.call(ADDR_A, "connect", a, ADDR_B, 6000) is None
    link.call(ADDR_A, "send", a, b"ping")
    link.run(duration=1)
    assert link.call(ADDR_B, "recv", b, 10) == b"ping"


def test_simultaneous_close():
    link = Link(config_a={"msl": 1.0}, config_b={"msl": 1.0})
    cs, ls, ss = open_pair(link)
    link.call(ADDR_A, "close", cs)
    link.call(ADDR_B, "close", ss)
    link.run(duration=0.5)
    for eng, sid in ((link.a, cs), (link.b, ss)):
        conn = eng.conns[sid]
        assert conn.state is State.TIME_WAIT
    path = [(t.from_state, t.to_state) for t in link.transitions if t.local[0] == ADDR_A]
    assert path[-3:] == [(State.ESTABLISHED, State.FIN_WAIT_1), (State.FIN_WAIT_1, State.CLOSING),
                         (State.CLOSING, State.TIME_WAIT)]
    link.run(duration=2.5)
    assert cs not in link.a.conns and ss not in link.b.conns


def test_the_seed_example_exchange_and_states():
    """client SYN J; server SYN K, ACK J+1; client ACK K+1; client FIN M, server ACK M+1
    (client FIN_WAIT_2, server CLOSE_WAIT); server FIN N, client ACK N+1; client TIME_WAIT until 2MSL."""
    link = Link(config_a={"msl": 1.0})
    cs, ls, ss = open_pair(link)
    client, server = link.a.conns[cs], link.b.conns[ss]
    link.call(ADDR_A, "close", cs)
    link.run(duration=0.1)
    assert client.state is State.FIN_WAIT_2 and server.state is State.CLOSE_WAIT
    assert link.call(ADDR_B, "recv", ss, 10) == b""
    link.call(ADDR_B, "close", ss)
    link.run(duration=0.1)
    assert client.state is State.TIME_WAIT and ss not in link.b.conns
    link.run(duration=2.0)
    assert cs not in link.a.conns
    kinds = [(s.flags.name if s.flags.name else str(s.flags)) for _, _, s, _ in link.log]
    assert len(kinds) == 7                     # SYN, SYN+ACK, ACK, FIN, ACK, FIN, ACK


def test_many_short_connections():
    link = Link(config_a={"msl": 0.5}, config_b={"msl": 0.5}, seed=11, loss=0.02)
    ls = link.call(ADDR_B, "socket")
    link.call(ADDR_B, "bind", ls, "0.0.0.0", 80)
    link.call(ADDR_B, "listen", ls, 16)
    done = []
    clients = {}
    servers = {}
    for i in range(40):
        s = link.call(ADDR_A, "socket")
        with pytest.raises(TcpError):
            link.call(ADDR_A, "connect", s, ADDR_B, 80)
        clients[s] = "connecting"

    def app():
        while True:
            try:
                sid, _ = link.b.accept(link.now, ls)
            except TcpError:
                break
            servers[sid] = bytearray()
        for sid, buf in list(servers.items()):
            try:
                chunk = link.b.recv(link.now, sid, 1000)
            except TcpError:
                continue
            if chunk:
                buf += chunk
            else:
                link.b.send(link.now, sid, b"echo:" + bytes(buf))
                link.b.close(link.now, sid)
                del servers[sid]
        for sid, st in list(clients.items()):
            if st == "connecting":
                try:
                    link.a.connect(link.now, sid, ADDR_B, 80)
                except TcpError:
                    continue
                link.a.send(link.now, sid, b"hello %d" % sid)
                link.a.shutdown(link.now, sid, 1)
                clients[sid] = bytearray()
            else:
                try:
                    chunk = link.a.recv(link.now, sid, 1000)
                except TcpError:
                    continue
                if chunk:
                    st += chunk
                else:
                    assert bytes(st) == b"echo:hello %d" % sid
                    link.a.close(link.now, sid)
                    del clients[sid]
                    done.append(sid)

    link.run(duration=600, until=lambda: len(done) == 40, app=app)
    assert len(done) == 40
    link.run(duration=60)
    assert [c for c in link.a.conns.values()] == [] and list(link.b.conns) == [ls]


def one_way(link: Link, size: int, seed: int, sack: bool = True) -> bytes:
    """A sends `size` random bytes to B, which reads them as they come; returns what B read."""
    data = random.Random(seed).randbytes(size)
    cs, ls, ss = open_pair(link)
    if not sack:                                   # as a peer that did not offer SACK-permitted
        link.a.conns[cs].sack_ok = link.b.conns[ss].sack_ok = False
    sent, got = 0, bytearray()

    def app():
        nonlocal sent
        while sent < size:
            try:
                sent += link.a.send(link.now, cs, data[sent:sent + 65536])
            except TcpError as e:
                assert e.errno == errno.EAGAIN
                break
        while True:
            try:
                chunk = link.b.recv(link.now, ss, 1 << 20)
            except TcpError as e:
                assert e.errno == errno.EAGAIN
                break
            got.extend(chunk)

    link.run(duration=3000, until=lambda: len(got) == size, app=app)
    assert bytes(got) == data                      # byte-identical
    return bytes(got)


@pytest.mark.parametrize("loss", [0.05, 0.10])
def test_sack_recovery_needs_far_fewer_rtos_than_newreno(loss):
    """Random loss both ways (seeded): with SACK-based recovery (RFC 6675) the sender repairs
    several holes per round trip; NewReno repairs one per round trip and waits for the RTO
    whenever a retransmission or a window's last segments are lost."""
    rtos, took = {}, {}
    for sack in (True, False):
        rtos[sack] = took[sack] = 0
        for seed in (1, 2, 3):
            link = Link(config_a={"rto_min": 0.2, "rto_initial": 0.5}, config_b={"delayed_ack": 0.04},
                        seed=seed, loss=loss, delay=0.01)
            start = link.now
            one_way(link, 1 << 20, seed, sack=sack)
            rtos[sack] += link.a.counters["rto_expiries"]
            took[sack] += link.now - start
            if sack:
                assert link.a.counters.get("sack_recoveries", 0) > 0
    assert rtos[True] * 3 <= rtos[False], rtos
    assert took[True] < took[False], took


@pytest.mark.parametrize("control", ["cubic", "reno"])
def test_each_congestion_control_carries_a_transfer_through_loss(control):
    """The same seeded lossy link for each congestion control: the data arrives whole, the
    loss window and recovery run, and the connection used the control it was given."""
    config = {"congestion": control, "rto_min": 0.2, "rto_initial": 0.5}
    link = Link(config_a=config, config_b={**config, "delayed_ack": 0.04}, seed=5, loss=0.02, delay=0.02)
    one_way(link, 1 << 20, 5)
    assert link.a.counters["fast_retransmits"] > 0
    assert {conn.cc.name for conn in link.a.conns.values()} == {control}
