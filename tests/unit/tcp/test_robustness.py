"""Nothing a peer sends raises out of segment_in (the engine runs strict here, so a bug would),
and the invariants of the control block hold afterwards."""
import os

from hypothesis import HealthCheck, given, settings, strategies as st

from proto.tcp import seqnum
from proto.tcp.state import State
from proto.wire.tcp import TcpFlags, TcpOptions

from .factory import in_state

EXAMPLES = int(os.environ.get("TCP_FUZZ_EXAMPLES", "300"))     # raise it for a long fuzzing run
STATES = [s for s in State if s is not State.CLOSED]

segment_specs = st.lists(st.tuples(
    st.integers(0, 255),                                   # flags
    st.integers(-70000, 70000) | st.integers(0, 2**32 - 1),   # seq offset from the peer's next seq
    st.integers(-70000, 70000) | st.integers(0, 2**32 - 1),   # ack offset from what the peer should ack
    st.integers(0, 65535),                                 # window
    st.binary(max_size=40),                                # payload
    st.booleans(),                                         # options on it
    st.floats(0, 3),                                       # time passing before it
), min_size=1, max_size=12)


def check_invariants(eng, conn):
    if conn.id not in eng.conns:
        return
    assert conn.recv_buffer.length == sum(len(c) for c in conn.recv_buffer.chunks) - conn.recv_buffer.offset
    assert conn.recv_buffer.ooo_len == sum(len(b) for _, b in conn.recv_buffer.ooo)
    if conn.state in (State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2, State.CLOSE_WAIT,
                      State.CLOSING, State.LAST_ACK):
        assert seqnum.le(conn.snd_una, conn.snd_nxt) and seqnum.le(conn.snd_nxt, conn.snd_max)
        assert seqnum.le(conn.rcv_nxt, conn.rcv_adv)
        assert conn.send_buffer_seq == conn.snd_una or conn.fin_acked or conn.state is State.SYN_RCVD


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state=st.sampled_from(STATES), specs=segment_specs, active=st.booleans(), pending=st.binary(max_size=3000))
def test_random_segments_never_raise(state, specs, active, pending):
    eng, sid, peer = in_state(state, active=active, mss=500)
    conn = peer.conn
    if pending and state in (State.ESTABLISHED, State.CLOSE_WAIT):
        peer.call("send", sid, pending)
    for flags, dseq, dack, window, payload, with_opts, dt in specs:
        if dt:
            peer.advance(dt)
        opts = TcpOptions(mss=dack & 0xFFFF, window_scale=dseq % 20) if with_opts else TcpOptions()
        peer.send(TcpFlags(flags), payload, seq=peer.seq + dseq, ack=peer.ack + dack, window=window,
                  options=opts, advance=False)
        check_invariants(eng, conn)
    peer.advance(3600)
    check_invariants(eng, conn)


@settings(max_examples=EXAMPLES, deadline=None)
@given(specs=segment_specs)
def test_plausible_traffic_keeps_queues_consistent(specs):
    """Mostly in-window data with small offsets: exercises reassembly."""
    eng, sid, peer = in_state(State.ESTABLISHED, rcvbuf=6000)
    base = peer.seq
    stream = bytes(range(256)) * 40
    for _, dseq, _, _, payload, _, _ in specs:
        off = abs(dseq) % 5000
        chunk = stream[off:off + 1 + len(payload) * 20]
        peer.send(TcpFlags.ACK, chunk, seq=base + off, advance=False)
        check_invariants(eng, peer.conn)
    got = b""
    while True:
        try:
            data = peer.call("recv", sid, 100000)
        except Exception:
            break
        if not data:
            break
        got += data
    assert got == stream[:len(got)]
