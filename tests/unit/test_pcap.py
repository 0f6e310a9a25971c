"""The pcap codec: round trips, both byte orders, nanoseconds, link types, damage."""
import struct

import pytest
from hypothesis import given, strategies as st

from proto.wire import pcap
from proto.wire.ipv4 import PROTO_TCP, build_ipv4

SRC = bytes([198, 18, 0, 1])
DST = bytes([198, 18, 0, 2])


def test_global_header_is_classic_libpcap():
    header = pcap.file_header()
    assert len(header) == 24
    magic, major, minor, zone, sigfigs, snaplen, linktype = struct.unpack("=IHHiIII", header)
    assert (magic, major, minor, zone, sigfigs) == (0xA1B2C3D4, 2, 4, 0, 0)
    assert linktype == pcap.LINKTYPE_RAW == 101
    assert snaplen >= 65535


def test_record_header_splits_microseconds():
    header = pcap.record_header(1700000000.1234567, 40)
    assert struct.unpack("=IIII", header) == (1700000000, 123457, 40, 40)
    # rounding up to a whole second carries into the seconds
    assert struct.unpack("=IIII", pcap.record_header(9.9999999, 1))[:2] == (10, 0)


def test_round_trip():
    packets = [build_ipv4(SRC, DST, PROTO_TCP, bytes(range(n % 256)) * (n // 256 + 1)) for n in (0, 1, 200, 1460)]
    times = [1700000000.0 + i * 0.001001 for i in range(len(packets))]
    data = pcap.file_header() + b"".join(pcap.record(t, p) for t, p in zip(times, packets))
    header, records = pcap.read_pcap(data)
    assert header.linktype == pcap.LINKTYPE_RAW and not header.nanoseconds and header.version == (2, 4)
    assert [r.data for r in records] == packets
    assert [r.original_length for r in records] == [len(p) for p in packets]
    assert [round(r.time, 6) for r in records] == [round(t, 6) for t in times]
    assert pcap.ip_packets(data) == [(r.time, r.data) for r in records]


@given(st.lists(st.tuples(st.floats(0, 2**31, allow_nan=False), st.binary(max_size=300)), max_size=20))
def test_round_trip_any(entries):
    data = pcap.file_header() + b"".join(pcap.record(t, p) for t, p in entries)
    _, records = pcap.read_pcap(data)
    assert [r.data for r in records] == [p for _, p in entries]
    for (t, _), r in zip(entries, records):
        assert abs(r.time - t) <= 1e-6 + abs(t) * 1e-15


def test_snaplen_cuts_and_keeps_original_length():
    data = pcap.file_header(snaplen=10) + pcap.record(1.0, b"x" * 100, snaplen=10)
    (record,) = pcap.read_pcap(data)[1]
    assert record.data == b"x" * 10 and record.original_length == 100


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_reads_either_byte_order_and_nanoseconds(order, nano):
    magic = pcap.MAGIC_NANO if nano else pcap.MAGIC_MICRO
    data = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, pcap.LINKTYPE_RAW)
    data += struct.pack(order + "IIII", 5, 250_000_000 if nano else 250_000, 3, 3) + b"abc"
    header, (record,) = pcap.read_pcap(data)
    assert header.byte_order == order and header.nanoseconds is nano
    assert record.time == 5.25 and record.data == b"abc"


def test_a_record_cut_short_ends_the_file():
    data = pcap.file_header() + pcap.record(1.0, b"first") + pcap.record(2.0, b"second")[:-2]
    assert [r.data for r in pcap.read_pcap(data)[1]] == [b"first"]
    assert pcap.read_pcap(pcap.file_header())[1] == []


def test_not_a_pcap():
    with pytest.raises(pcap.PcapError):
        pcap.read_pcap(b"\x0a\x0d\x0d\x0a" + bytes(40))       # pcapng
    with pytest.raises(pcap.PcapError):
        pcap.read_pcap(b"short")
    with pytest.raises(pcap.PcapError):
        pcap.read_pcap(pcap.file_header() + struct.pack("=IIII", 0, 0, 1 << 30, 1 << 30))


def test_link_layers_give_the_ip_packet():
    ip = build_ipv4(SRC, DST, PROTO_TCP, b"payload")
    assert pcap.ip_packet(pcap.LINKTYPE_RAW, ip) == ip
    assert pcap.ip_packet(pcap.LINKTYPE_IPV4, ip) == ip
    assert pcap.ip_packet(pcap.LINKTYPE_ETHERNET, bytes(12) + b"\x08\x00" + ip) == ip
    assert pcap.ip_packet(pcap.LINKTYPE_ETHERNET, bytes(12) + b"\x86\xdd" + ip) is None
    assert pcap.ip_packet(pcap.LINKTYPE_LINUX_SLL, bytes(14) + b"\x08\x00" + ip) == ip
    assert pcap.ip_packet(pcap.LINKTYPE_NULL, b"\x02\x00\x00\x00" + ip) == ip
    assert pcap.ip_packet(147, ip) is None
