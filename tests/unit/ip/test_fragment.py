"""Reassembly (order, overlap, duplicates, limits, timeout) and fragmentation."""
import random

import pytest
from hypothesis import given, settings, strategies as st

from proto.ip.fragment import FragmentationNeeded, Reassembler, fragment
from proto.wire.ipv4 import PROTO_TCP, PROTO_UDP, Ipv4Flags, Ipv4Header, build_ipv4, parse_ipv4

SRC = bytes([198, 18, 0, 1])
DST = bytes([198, 18, 0, 2])
DATA = bytes(range(256)) * 12                    # 3072 bytes


def piece(start: int, data: bytes, more: bool, ident: int = 1, protocol: int = PROTO_UDP,
          src: bytes = SRC, options: bytes = b"") -> tuple[Ipv4Header, memoryview]:
    """A fragment as the layer hands it to the reassembler."""
    return parse_ipv4(build_ipv4(src, DST, protocol, data, ident=ident, df=False, mf=more,
                                 frag_offset=start, options=options))


def split(data: bytes, size: int, ident: int = 1) -> list[tuple[Ipv4Header, memoryview]]:
    """`data` as fragments of `size` bytes (a multiple of 8)."""
    return [piece(start, data[start:start + size], start + size < len(data), ident)
            for start in range(0, len(data), size)]


def feed(reassembler: Reassembler, pieces, now: float = 0.0):
    results = [reassembler.add(now, header, payload) for header, payload in pieces]
    assert all(result is None for result in results[:-1])
    return results[-1]


def template(ident: int = 7, df: bool = False, options: bytes = b"", flags: Ipv4Flags = Ipv4Flags(0),
             frag_offset: int = 0) -> Ipv4Header:
    return Ipv4Header(tos=0, total_length=0, ident=ident,
                      flags=flags | (Ipv4Flags.DF if df else Ipv4Flags(0)),
                      frag_offset=frag_offset, ttl=64, protocol=PROTO_TCP, checksum=0,
                      src=SRC, dst=DST, options=options)


# ---- reassembly ---------------------------------------------------------------------

def test_in_order():
    reassembler = Reassembler()
    header, payload = feed(reassembler, split(DATA, 1000 // 8 * 8))
    assert payload == DATA
    assert header.total_length == 20 + len(DATA)
    assert header.frag_offset == 0 and not header.more_fragments
    assert (header.src, header.dst, header.protocol, header.ident) == (SRC, DST, PROTO_UDP, 1)
    assert build_ipv4(SRC, DST, PROTO_UDP, DATA, ident=1, df=False)[:20][10:12] == \
        header.checksum.to_bytes(2, "big")
    counters = reassembler.counters
    assert counters["reasm_reqds"] == 4 and counters["reasm_oks"] == 1
    assert counters["reasm_fails"] == 0
    assert reassembler.queues == {} and reassembler.memory == 0


def test_out_of_order_and_last_first():
    pieces = split(DATA, 512)
    for order in (pieces[::-1], [pieces[2], pieces[0], pieces[5], pieces[1], pieces[4], pieces[3]]):
        reassembler = Reassembler()
        _, payload = feed(reassembler, order)
        assert payload == DATA


def test_interleaved_datagrams_are_kept_apart():
    reassembler = Reassembler()
    first = split(DATA, 1024, ident=1)
    second = split(DATA[::-1], 1024, ident=2)
    results = [reassembler.add(0.0, *p) for pair in zip(first, second) for p in pair]
    done = [result for result in results if result is not None]
    assert [bytes(payload) for _, payload in done] == [DATA, DATA[::-1]]


def test_key_includes_protocol_and_source():
    reassembler = Reassembler()
    assert reassembler.add(0.0, *piece(0, b"a" * 8, True, protocol=PROTO_UDP)) is None
    assert reassembler.add(0.0, *piece(8, b"b" * 8, False, protocol=PROTO_TCP)) is None
    assert reassembler.add(0.0, *piece(8, b"c" * 8, False, src=bytes([198, 18, 0, 9]))) is None
    assert len(reassembler.queues) == 3


def test_non_last_fragment_cut_to_eight_bytes():
    reassembler = Reassembler()
    assert reassembler.add(0.0, *piece(0, b"A" * 13, True)) is None    # 13 -> 8 bytes kept
    _, payload = reassembler.add(0.0, *piece(8, b"B" * 4, False))
    assert payload == b"A" * 8 + b"B" * 4


def test_overlap_discards_the_whole_datagram():
    reassembler = Reassembler()
    reassembler.add(0.0, *piece(0, DATA[:16], True))
    reassembler.add(0.0, *piece(24, DATA[24:40], True))
    assert reassembler.add(0.0, *piece(8, DATA[8:32], True)) is None     # straddles both
    assert reassembler.queues == {} and reassembler.memory == 0
    assert reassembler.counters["drop_reasm_overlap"] == 1
    assert reassembler.counters["reasm_fails"] == 1
    # The rest of the datagram then starts a new queue that never completes.
    assert reassembler.add(0.0, *piece(40, DATA[40:48], False)) is None
    assert reassembler.counters["reasm_oks"] == 0


@pytest.mark.parametrize("start,length", [
    (0, 24),    # the queued piece again: a duplicate
    (8, 8),     # inside the queued piece: a duplicate
    (16, 16),   # from the queued piece into the gap: an overlap
    (32, 16),   # from the gap into the last piece: an overlap
])
def test_partial_overlaps(start, length):
    reassembler = Reassembler()
    reassembler.add(0.0, *piece(0, DATA[:24], True))
    reassembler.add(0.0, *piece(40, DATA[40:48], False))
    reassembler.add(0.0, *piece(start, DATA[start:start + length], True))
    if start + length <= 24:
        assert reassembler.counters["drop_reasm_duplicate"] == 1 and reassembler.queues
    else:
        assert reassembler.counters["drop_reasm_overlap"] == 1 and not reassembler.queues


def test_overlap_reaching_back_over_a_gap():
    reassembler = Reassembler()
    reassembler.add(0.0, *piece(16, DATA[16:24], True))
    reassembler.add(0.0, *piece(0, DATA[:24], True))          # covers the gap [0,16) too
    assert reassembler.counters["drop_reasm_overlap"] == 1 and not reassembler.queues


def test_exact_duplicate_is_dropped_and_the_queue_kept():
    reassembler = Reassembler()
    pieces = split(DATA, 1024)
    reassembler.add(0.0, *pieces[0])
    assert reassembler.add(0.0, *pieces[0]) is None
    assert reassembler.counters["drop_reasm_duplicate"] == 1
    assert reassembler.counters["reasm_fails"] == 0
    reassembler.add(0.0, *pieces[2])
    assert reassembler.add(0.0, *pieces[2]) is None            # duplicate last fragment
    _, payload = reassembler.add(0.0, *pieces[1])
    assert payload == DATA and reassembler.counters["drop_reasm_duplicate"] == 2


def test_fragment_inside_contiguous_data_is_a_duplicate():
    reassembler = Reassembler()
    reassembler.add(0.0, *piece(0, DATA[:16], True))
    reassembler.add(0.0, *piece(16, DATA[16:32], True))
    assert reassembler.add(0.0, *piece(8, DATA[8:24], True)) is None   # spans both, inside
    assert reassembler.counters["drop_reasm_duplicate"] == 1
    _, payload = reassembler.add(0.0, *piece(32, DATA[32:40], False))
    assert payload == DATA[:40]


def test_two_different_last_fragments_discard():
    reassembler = Reassembler()
    reassembler.add(0.0, *piece(0, DATA[:8], True))
    reassembler.add(0.0, *piece(16, DATA[16:24], False))
    reassembler.add(0.0, *piece(16, DATA[16:32], False))
    assert reassembler.counters["drop_reasm_malformed"] == 1 and not reassembler.queues


def test_data_beyond_the_last_fragment_discards():
    reassembler = Reassembler()
    reassembler.add(0.0, *piece(16, DATA[16:24], False))
    reassembler.add(0.0, *piece(24, DATA[24:32], True))
    assert reassembler.counters["drop_reasm_malformed"] == 1 and not reassembler.queues


def test_last_fragment_ending_before_queued_data_discards():
    reassembler = Reassembler()
    reassembler.add(0.0, *piece(32, DATA[32:40], True))
    reassembler.add(0.0, *piece(8, DATA[8:16], False))
    assert reassembler.counters["drop_reasm_malformed"] == 1 and not reassembler.queues


def test_empty_fragment_discards():
    reassembler = Reassembler()
    reassembler.add(0.0, *piece(0, DATA[:8], True))
    reassembler.add(0.0, *piece(8, b"1234567", True))        # cut to 0 bytes
    assert reassembler.counters["drop_reasm_malformed"] == 1 and not reassembler.queues


def test_oversize_is_dropped_as_soon_as_seen():
    reassembler = Reassembler()
    reassembler.add(0.0, *piece(0, DATA[:8], True))
    # Offset 65528 + 8 bytes: 65536 data bytes, more than any datagram holds.
    assert reassembler.add(0.0, *piece(65528, b"x" * 8, False)) is None
    assert reassembler.counters["drop_reasm_oversize"] == 1
    assert not reassembler.queues and reassembler.memory == 0


def test_largest_datagram_reassembles():
    data = bytes(random.Random(1).randbytes(65515))
    reassembler = Reassembler()
    _, payload = feed(reassembler, split(data, 1480))
    assert payload == data


def test_oversize_found_at_reassembly_with_long_first_header():
    reassembler = Reassembler()
    # The last fragment fits with a 20-byte header, but the first fragment has 40 bytes of options.
    assert reassembler.add(0.0, *piece(65488, b"z" * 24, False)) is None    # 20 + 65512 = 65532
    assert reassembler.add(0.0, *piece(8, b"y" * 65480, True)) is None
    assert reassembler.add(0.0, *piece(0, b"x" * 8, True, options=b"\x01" * 40)) is None
    assert reassembler.counters["drop_reasm_oversize"] == 1 and not reassembler.queues
    assert reassembler.memory == 0


def test_timeout_expires_and_reports_first_fragment():
    reassembler = Reassembler(timeout=30.0)
    first = piece(0, DATA[:16], True, ident=1)
    reassembler.add(100.0, *first)
    reassembler.add(105.0, *piece(16, DATA[16:32], True, ident=2))   # no first fragment
    assert reassembler.next_deadline() == 130.0
    assert reassembler.expire(129.9) == []
    timed_out = reassembler.expire(130.0)
    assert len(timed_out) == 1
    assert timed_out[0].header == first[0]
    assert timed_out[0].quote == build_ipv4(SRC, DST, PROTO_UDP, DATA[:16], ident=1, df=False,
                                            mf=True)[:28]
    assert reassembler.next_deadline() == 135.0
    assert reassembler.expire(200.0) == []                  # the second had no first fragment
    assert reassembler.next_deadline() is None
    assert reassembler.counters["drop_reasm_timeout"] == 2
    assert reassembler.counters["reasm_fails"] == 2 and reassembler.memory == 0


def test_later_fragments_do_not_extend_the_deadline():
    reassembler = Reassembler(timeout=30.0)
    reassembler.add(0.0, *piece(0, DATA[:8], True))
    reassembler.add(29.0, *piece(8, DATA[8:16], True))
    assert reassembler.next_deadline() == 30.0


def test_memory_cap_evicts_oldest_queues():
    # Each 1000-byte fragment is charged 1020 bytes; room for three.
    reassembler = Reassembler(max_bytes=3 * 1020)
    for ident in (1, 2, 3):
        reassembler.add(float(ident), *piece(0, DATA[:1000], True, ident=ident))
    assert reassembler.memory == 3 * 1020 and len(reassembler.queues) == 3
    reassembler.add(4.0, *piece(0, DATA[:1000], True, ident=4))
    assert [key[3] for key in reassembler.queues] == [2, 3, 4]
    assert reassembler.counters["drop_reasm_memory"] == 1
    assert reassembler.memory == 3 * 1020
    # A big one pushes out as many as needed.
    reassembler.add(5.0, *piece(0, DATA[:2000], True, ident=5))
    assert [key[3] for key in reassembler.queues] == [4, 5]
    assert reassembler.counters["drop_reasm_memory"] == 3
    assert reassembler.counters["reasm_fails"] == 3


def test_fragment_larger_than_the_cap_is_dropped():
    reassembler = Reassembler(max_bytes=500)
    reassembler.add(0.0, *piece(0, DATA[:1000], True))
    assert not reassembler.queues and reassembler.memory == 0
    assert reassembler.counters["drop_reasm_memory"] == 1


def test_shared_counters():
    counters = {"in_receives": 5}
    reassembler = Reassembler(counters=counters)
    assert counters["in_receives"] == 5 and counters["reasm_reqds"] == 0
    reassembler.add(0.0, *piece(0, DATA[:8], True))
    assert counters["reasm_reqds"] == 1


# ---- fragmentation --------------------------------------------------------------------

def test_fits_is_not_fragmented():
    packets = fragment(template(df=True), b"x" * 1480, 1500)
    assert len(packets) == 1 and len(packets[0]) == 1500
    header, payload = parse_ipv4(packets[0])
    assert header.dont_fragment and not header.is_fragment


def test_df_too_big_raises():
    with pytest.raises(FragmentationNeeded):
        fragment(template(df=True), b"x" * 1481, 1500)


def test_sizes_and_offsets():
    packets = fragment(template(), DATA, 1500)
    parsed = [parse_ipv4(packet) for packet in packets]
    assert [len(packet) for packet in packets] == [1500, 1500, 20 + 3072 - 2960]
    assert [header.frag_offset for header, _ in parsed] == [0, 1480, 2960]
    assert [header.more_fragments for header, _ in parsed] == [True, True, False]
    assert all(header.ident == 7 and not header.dont_fragment for header, _ in parsed)
    assert b"".join(bytes(payload) for _, payload in parsed) == DATA


def test_odd_mtu_rounds_data_down_to_eight():
    packets = fragment(template(), DATA[:100], 68 + 5)       # room 53 -> 48 bytes per fragment
    assert [len(parse_ipv4(packet)[1]) for packet in packets] == [48, 48, 4]


def test_minimum_mtu_with_full_options():
    packets = fragment(template(options=b"\x01" * 40), DATA[:64], 68)
    parsed = [parse_ipv4(packet) for packet in packets]
    assert len(parsed[0][1]) == 8                                 # 68 - 60 = 8
    assert all(len(packet) <= 68 for packet in packets)
    assert b"".join(bytes(payload) for _, payload in parsed) == DATA[:64]


def test_only_copied_options_go_to_later_fragments():
    options = bytes([0x94, 4, 0, 0]) + bytes([7, 3, 4]) + b"\x01" + b"\0" * 4   # RA (copied), RR
    packets = fragment(template(options=options), DATA[:200], 100)
    headers = [parse_ipv4(packet)[0] for packet in packets]
    assert headers[0].options == options
    assert all(header.options == bytes([0x94, 4, 0, 0]) for header in headers[1:])


def test_refragmenting_a_fragment_keeps_its_place():
    middle = template(flags=Ipv4Flags.MF, frag_offset=1480)
    headers = [parse_ipv4(packet)[0] for packet in fragment(middle, DATA[:1480], 576)]
    assert [header.frag_offset for header in headers] == [1480, 1480 + 552, 1480 + 1104]
    assert all(header.more_fragments for header in headers)


@settings(max_examples=200)
@given(data=st.binary(min_size=1, max_size=5000), mtu=st.integers(68, 1600),
       option_words=st.integers(0, 10), seed=st.integers(0, 2**32 - 1))
def test_fragment_then_reassemble_is_identity(data, mtu, option_words, seed):
    options = b"\x01" * (4 * option_words)
    packets = fragment(template(options=options), data, mtu)
    assert all(len(packet) <= mtu for packet in packets)
    parsed = [parse_ipv4(packet) for packet in packets]
    assert all(header.frag_offset % 8 == 0 for header, _ in parsed)
    if len(packets) == 1:
        assert bytes(parsed[0][1]) == data
        return
    random.Random(seed).shuffle(parsed)
    reassembler = Reassembler()
    header, payload = feed(reassembler, parsed)
    assert payload == data
    assert header.options == options and header.total_length == 20 + len(options) + len(data)
    assert reassembler.counters["reasm_fails"] == 0 and reassembler.memory == 0
