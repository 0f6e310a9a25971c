"""Every row of the seed's state diagram (SEED-NOTES.md section 4), driven and recorded."""
import pytest

from proto.tcp.state import TRANSITIONS, State, allowed

from .factory import ACK, FIN, SYN, established, in_state, listening, syn_sent

S = State




def scenario(row):
    """Drive the event of one row; return the hub's recorded transitions."""
    frm, to = row
    if row == (S.CLOSED, S.LISTEN):
        eng, sid, peer = listening()
    elif row == (S.CLOSED, S.SYN_SENT):
        eng, sid, peer = syn_sent()
    elif row == (S.LISTEN, S.SYN_RCVD):
        eng, sid, peer = in_state(S.SYN_RCVD)
    elif row == (S.SYN_SENT, S.SYN_RCVD):
        eng, sid, peer = syn_sent()
        peer.send(SYN, options=peer.syn_options())
    elif row == (S.SYN_SENT, S.ESTABLISHED):
        eng, sid, peer = established(active=True)
    elif row == (S.SYN_RCVD, S.ESTABLISHED):
        eng, sid, peer = established(active=False)
    elif row == (S.ESTABLISHED, S.FIN_WAIT_1):
        eng, sid, peer = in_state(S.FIN_WAIT_1, orphan=True)
    elif row == (S.ESTABLISHED, S.CLOSE_WAIT):
        eng, sid, peer = in_state(S.CLOSE_WAIT)
    elif row == (S.CLOSE_WAIT, S.LAST_ACK):
        eng, sid, peer = in_state(S.LAST_ACK, orphan=True)
    elif row == (S.LAST_ACK, S.CLOSED):
        eng, sid, peer = in_state(S.LAST_ACK, orphan=True)
        peer.send(ACK)
    elif row == (S.FIN_WAIT_1, S.FIN_WAIT_2):
        eng, sid, peer = in_state(S.FIN_WAIT_2)
    elif row == (S.FIN_WAIT_1, S.CLOSING):
        eng, sid, peer = in_state(S.CLOSING)
    elif row == (S.FIN_WAIT_1, S.TIME_WAIT):
        eng, sid, peer = in_state(S.FIN_WAIT_1)
        peer.send(FIN | ACK)
    elif row == (S.FIN_WAIT_2, S.TIME_WAIT):
        eng, sid, peer = in_state(S.TIME_WAIT)
    elif row == (S.CLOSING, S.TIME_WAIT):
        eng, sid, peer = in_state(S.CLOSING)
        peer.send(ACK)
    elif row == (S.TIME_WAIT, S.CLOSED):
        eng, sid, peer = in_state(S.TIME_WAIT, msl=1)
        peer.advance(2.0)
    else:
        raise AssertionError(f"no scenario for {row}")
    return peer.transitions


SEED_ROWS = [
    (S.CLOSED, S.LISTEN), (S.CLOSED, S.SYN_SENT), (S.LISTEN, S.SYN_RCVD), (S.SYN_SENT, S.SYN_RCVD),
    (S.SYN_SENT, S.ESTABLISHED), (S.SYN_RCVD, S.ESTABLISHED), (S.ESTABLISHED, S.FIN_WAIT_1),
    (S.ESTABLISHED, S.CLOSE_WAIT), (S.CLOSE_WAIT, S.LAST_ACK), (S.LAST_ACK, S.CLOSED),
    (S.FIN_WAIT_1, S.FIN_WAIT_2), (S.FIN_WAIT_1, S.CLOSING), (S.FIN_WAIT_1, S.TIME_WAIT),
    (S.FIN_WAIT_2, S.TIME_WAIT), (S.CLOSING, S.TIME_WAIT), (S.TIME_WAIT, S.CLOSED),
]


@pytest.mark.parametrize("row", SEED_ROWS, ids=lambda r: f"{r[0].name}->{r[1].name}")
def test_seed_row_driven_and_recorded(row):
    transitions = scenario(row)
    recorded = [(t.from_state, t.to_state) for t in transitions]
    assert row in recorded
    t = next(t for t in transitions if (t.from_state, t.to_state) == row)
    assert t.cause and t.conn_id > 0 and isinstance(t.time, float)


def test_table_holds_every_seed_row_and_rejects_others():
    for row in SEED_ROWS:
        assert row in TRANSITIONS
    assert allowed(S.ESTABLISHED, S.CLOSED)                  # aborts from anywhere
    assert not allowed(S.CLOSED, S.ESTABLISHED)
    assert not allowed(S.TIME_WAIT, S.ESTABLISHED)


def test_illegal_transition_is_a_bug_that_raises():
    eng, sid, peer = established()
    with pytest.raises(AssertionError):
        eng.cx.set_state(peer.conn, peer.now, S.LISTEN, "nonsense")
