"""nicd's impairment stage, driven by a fake clock and a fixed seed."""
import pytest

from proto.impair import REORDER_HOLD, Impairment, ImpairSettings


def packets(n: int) -> list[bytes]:
    return [i.to_bytes(4, "big") for i in range(n)]


def run(stage: Impairment, sent: list[bytes], direction: str = "in", gap: float = 0.001,
        until: float | None = None) -> list[tuple[float, bytes]]:
    """Offer `sent` one per `gap` seconds; return (time delivered, packet), polling every 0.1 ms."""
    out: list[tuple[float, bytes]] = []
    now = 0.0
    for i, packet in enumerate(sent):
        now = i * gap
        out += [(now, p) for p in stage.offer(now, packet, direction)]
        next_offer = (i + 1) * gap
        while (due := stage.next_release()) is not None and due <= next_offer:
            out += [(due, p) for _, p in stage.release(due)]
    end = until if until is not None else now + 10
    while (due := stage.next_release()) is not None and due <= end:
        out += [(due, p) for _, p in stage.release(due)]
    return out


def test_settings_are_checked():
    for bad in (dict(loss=1.5), dict(loss=-0.1), dict(delay=-1), dict(direction="sideways"), dict(reorder=2)):
        with pytest.raises(ValueError):
            ImpairSettings(**bad)
    assert ImpairSettings().describe() == "nothing (both)"
    assert ImpairSettings(loss=0.5, delay=0.05, jitter=0.01, direction="in").describe() \
        == "loss 0.5, delay 50 ms ± 10 ms (in)"


def test_nothing_set_passes_everything_at_once_in_order():
    stage = Impairment(ImpairSettings(), seed=1)
    sent = packets(100)
    assert run(stage, sent) == [(i * 0.001, p) for i, p in enumerate(sent)]
    assert stage.counters["passed"] == 100 and stage.next_release() is None


def test_loss_rate_is_about_p():
    stage = Impairment(ImpairSettings(loss=0.3), seed=7)
    delivered = run(stage, packets(10_000))
    assert 6700 <= len(delivered) <= 7300
    assert stage.counters["dropped"] + len(delivered) == 10_000
    assert [p for _, p in delivered] == sorted(p for _, p in delivered)      # survivors keep their order


def test_loss_is_deterministic_with_a_seed():
    first = run(Impairment(ImpairSettings(loss=0.5), seed=42), packets(200))
    second = run(Impairment(ImpairSettings(loss=0.5), seed=42), packets(200))
    other = run(Impairment(ImpairSettings(loss=0.5), seed=43), packets(200))
    assert first == second and first != other


def test_loss_of_one_drops_everything():
    stage = Impairment(ImpairSettings(loss=1.0), seed=1)
    assert run(stage, packets(50)) == [] and stage.counters["dropped"] == 50


def test_direction_limits_the_stage():
    stage = Impairment(ImpairSettings(loss=1.0, direction="in"), seed=1)
    assert stage.offer(0.0, b"out", "out") == [b"out"]
    assert stage.offer(0.0, b"in", "in") == []
    stage.configure(ImpairSettings(loss=1.0, direction="out"))
    assert stage.offer(0.0, b"in", "in") == [b"in"]
    assert stage.offer(0.0, b"out", "out") == []


def test_delay_holds_each_packet_exactly_that_long_in_order():
    stage = Impairment(ImpairSettings(delay=0.05), seed=1)
    assert stage.offer(1.0, b"a", "out") == []
    assert stage.offer(1.01, b"b", "out") == []
    assert stage.next_release() == pytest.approx(1.05)
    assert stage.release(1.049) == []
    assert stage.release(1.05) == [("out", b"a")]
    assert stage.next_release() == pytest.approx(1.06)
    assert stage.release(2.0) == [("out", b"b")]
    assert stage.counters["delayed"] == 2 and stage.next_release() is None


def test_jitter_spreads_the_delay_within_its_bounds():
    stage = Impairment(ImpairSettings(delay=0.05, jitter=0.02), seed=3)
    delivered = run(stage, packets(500), gap=0.0)
    delays = sorted(t for t, _ in delivered)
    assert len(delivered) == 500
    assert 0.03 <= delays[0] < 0.035 and 0.065 < delays[-1] <= 0.07
    assert [p for _, p in delivered] != packets(500)            # jitter reorders, like netem


def test_jitter_never_makes_a_negative_delay():
    stage = Impairment(ImpairSettings(delay=0.001, jitter=0.01), seed=3)
    delivered = run(stage, packets(300), gap=0.0)
    assert len(delivered) == 300 and min(t for t, _ in delivered) >= 0.0


def test_duplicate_rate_is_about_p():
    stage = Impairment(ImpairSettings(duplicate=0.2), seed=5)
    delivered = [p for _, p in run(stage, packets(5000))]
    extra = len(delivered) - 5000
    assert extra == stage.counters["duplicated"] and 850 <= extra <= 1150
    assert sorted(set(delivered)) == packets(5000)
    assert delivered == sorted(delivered)                       # a copy follows its original


def test_reorder_swaps_a_packet_with_the_next_one():
    stage = Impairment(ImpairSettings(reorder=1.0), seed=1)
    assert stage.offer(0.0, b"1", "in") == []                   # held back
    assert stage.offer(0.001, b"2", "in") == [b"2", b"1"]       # overtaken
    assert stage.offer(0.002, b"3", "in") == []
    assert stage.offer(0.003, b"4", "out") == []                # directions hold separately
    assert stage.offer(0.004, b"5", "in") == [b"5", b"3"]
    assert stage.counters["reordered"] == 2


def test_reorder_rate_and_nothing_lost():
    stage = Impairment(ImpairSettings(reorder=0.25), seed=11)
    delivered = [p for _, p in run(stage, packets(4000))]
    assert sorted(delivered) == packets(4000)
    inversions = sum(1 for a, b in zip(delivered, delivered[1:]) if a > b)
    assert inversions == stage.counters["reordered"]
    assert 0.15 * 4000 <= inversions <= 0.25 * 4000


def test_a_held_packet_alone_goes_after_the_hold():
    stage = Impairment(ImpairSettings(reorder=1.0), seed=1)
    assert stage.offer(5.0, b"only", "out") == []
    assert stage.next_release() == pytest.approx(5.0 + REORDER_HOLD)
    assert stage.release(5.0 + REORDER_HOLD / 2) == []
    assert stage.release(5.0 + REORDER_HOLD) == [("out", b"only")]
    assert stage.counters["reordered"] == 0


def test_reorder_with_delay_follows_the_overtaking_packet():
    stage = Impairment(ImpairSettings(reorder=1.0, delay=0.02), seed=1)
    assert stage.offer(0.0, b"1", "in") == []
    assert stage.offer(0.001, b"2", "in") == []
    assert stage.release(0.021) == [("in", b"2"), ("in", b"1")]


def test_flush_hands_out_everything_held():
    stage = Impairment(ImpairSettings(delay=10.0, reorder=0.5), seed=2)
    for i, p in enumerate(packets(20)):
        stage.offer(i * 0.001, p, "in")
    flushed = stage.flush()
    assert sorted(p for _, p in flushed) == packets(20)
    assert stage.pending() == 0 and stage.next_release() is None


def test_off_is_no_stage():
    # nicd holds None when impairment is off; configuring zeros passes everything untouched
    stage = Impairment(ImpairSettings(loss=1.0), seed=1)
    stage.configure(ImpairSettings())
    assert run(stage, packets(10)) == [(i * 0.001, p) for i, p in enumerate(packets(10))]
