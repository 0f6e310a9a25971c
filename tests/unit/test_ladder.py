"""The ladder diagram: states inferred from segments, tcpd's transitions, SVG and text."""
import xml.etree.ElementTree as ET

import pytest

from deploy.ladder import (
    ACK, FIN, PSH, RST, SYN, SegmentEvent, StateEvent, build_ladder, connections, events_from_trace,
    parse_endpoint, render_svg, render_text, segments_from_pcap, select_connection,
)
from proto.wire import pcap
from proto.wire.ipv4 import PROTO_TCP, build_ipv4, str_to_addr
from proto.wire.tcp import TcpFlags, TcpSegment, build_tcp

CLIENT = ("198.18.0.1", 41234)
SERVER = ("198.18.0.2", 8080)
CLIENT_ISN, SERVER_ISN = 4294967000, 123456         # the client's wraps around 2**32
SVG = "{http://www.w3.org/2000/svg}"

CLIENT_STATES = ["SYN_SENT", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT"]
SERVER_STATES = ["SYN_RCVD", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]


def seg(t, src, flags, seq, ack=0, length=0, window=64240):
    dst = SERVER if src == CLIENT else CLIENT
    return SegmentEvent(t, src, dst, flags, seq % (1 << 32), ack % (1 << 32), length, window)


def full_connection() -> list[SegmentEvent]:
    """The seed's exchange: handshake, one request and answer, the client closes first."""
    c, s = CLIENT_ISN, SERVER_ISN
    return [
        seg(0.000, CLIENT, SYN, c),
        seg(0.001, SERVER, SYN | ACK, s, c + 1),
        seg(0.002, CLIENT, ACK, c + 1, s + 1),
        seg(0.003, CLIENT, PSH | ACK, c + 1, s + 1, 5),
        seg(0.004, SERVER, PSH | ACK, s + 1, c + 6, 12),
        seg(0.005, CLIENT, ACK, c + 6, s + 13),
        seg(0.010, CLIENT, FIN | ACK, c + 6, s + 13),
        seg(0.011, SERVER, ACK, s + 13, c + 7),
        seg(0.200, SERVER, FIN | ACK, s + 13, c + 7),
        seg(0.201, CLIENT, ACK, c + 7, s + 14),
    ]


def test_states_inferred_from_a_full_connection_follow_the_seed():
    ladder = build_ladder(full_connection())
    assert (ladder.left, ladder.right, ladder.left_role, ladder.right_role) == (CLIENT, SERVER, "client", "server")
    assert ladder.states("client") == ["CLOSED"] + CLIENT_STATES
    assert ladder.states("server") == ["LISTEN"] + SERVER_STATES


def test_labels_use_relative_sequence_numbers():
    labels = [row.label for row in build_ladder(full_connection()).rows]
    assert labels[:5] == ["SYN  seq 0", "SYN+ACK  seq 0  ack 1", "ACK  seq 1  ack 1",
                          "PSH+ACK  seq 1  ack 1  len 5", "PSH+ACK  seq 1  ack 6  len 12"]
    assert labels[6] == "FIN+ACK  seq 6  ack 13" and labels[-1] == "ACK  seq 7  ack 14"


def test_svg_is_well_formed_and_holds_every_segment_and_state():
    segments = full_connection()
    ladder = build_ladder(segments, source="a synthetic connection")
    svg = render_svg(ladder)
    root = ET.fromstring(svg.encode())
    assert root.tag == SVG + "svg" and int(root.get("width")) >= 800
    texts = [t.text or "" for t in root.iter(SVG + "text")]
    for row in ladder.rows:
        assert row.label in texts
    arrows = [line for line in root.iter(SVG + "line") if (line.get("marker-end") or "").startswith("url(#head-")]
    assert len(arrows) >= len(segments)                 # one per segment, plus the legend's samples
    assert texts.count("ESTABLISHED") == 2
    for state in CLIENT_STATES + SERVER_STATES:
        assert state in texts
    # the states appear top to bottom in the seed's order on each side
    ys = {}
    for t in root.iter(SVG + "text"):
        if t.text in CLIENT_STATES + SERVER_STATES + ["CLOSED", "LISTEN"]:
            left = float(t.get("x")) < 590
            ys.setdefault(left, []).append((float(t.get("y")), t.text))
    assert [s for _, s in sorted(ys[True])] == ["CLOSED"] + CLIENT_STATES
    assert [s for _, s in sorted(ys[False])] == ["LISTEN"] + SERVER_STATES
    assert "client" in svg.lower() and "server" in svg.lower()


def test_text_version_shows_arrows_and_states():
    text = render_text(build_ladder(full_connection()))
    lines = text.splitlines()
    assert "client 198.18.0.1:41234" in lines[0] and "server 198.18.0.2:8080" in lines[0]
    syn = next(line for line in lines if "SYN  seq 0 " in line)
    assert "SYN_SENT |" in syn and syn.rstrip().endswith("| SYN_RCVD") and "->|" in syn
    synack = next(line for line in lines if "SYN+ACK" in line)
    assert "ESTABLISHED |<-" in synack
    assert any("TIME_WAIT |<-" in line and "FIN+ACK" in line for line in lines)
    assert any(line.rstrip().endswith("| CLOSED") for line in lines)


def test_fin_ack_that_acknowledges_a_fin_goes_straight_to_time_wait():
    segments = full_connection()[:6] + [
        seg(0.010, CLIENT, FIN | ACK, CLIENT_ISN + 6, SERVER_ISN + 13),
        seg(0.011, SERVER, FIN | ACK, SERVER_ISN + 13, CLIENT_ISN + 7),
        seg(0.012, CLIENT, ACK, CLIENT_ISN + 7, SERVER_ISN + 14),
    ]
    ladder = build_ladder(segments)
    assert ladder.states("client")[-2:] == ["FIN_WAIT_1", "TIME_WAIT"]
    assert ladder.states("server")[-3:] == ["CLOSE_WAIT", "LAST_ACK", "CLOSED"]


def test_simultaneous_close_passes_through_closing():
    segments = full_connection()[:6] + [
        seg(0.010, CLIENT, FIN | ACK, CLIENT_ISN + 6, SERVER_ISN + 13),
        seg(0.010, SERVER, FIN | ACK, SERVER_ISN + 13, CLIENT_ISN + 6),
        seg(0.011, CLIENT, ACK, CLIENT_ISN + 7, SERVER_ISN + 14),
        seg(0.011, SERVER, ACK, SERVER_ISN + 14, CLIENT_ISN + 7),
    ]
    ladder = build_ladder(segments)
    # the client's FIN reaches the server first here (CLOSE_WAIT), the server's FIN
    # crosses it and finds the client in FIN_WAIT_1
    assert ladder.states("client")[-2:] == ["CLOSING", "TIME_WAIT"]


def test_reset_closes_both_sides():
    segments = full_connection()[:3] + [seg(0.01, SERVER, RST | ACK, SERVER_ISN + 1, CLIENT_ISN + 1)]
    ladder = build_ladder(segments)
    assert ladder.states("client")[-1] == "CLOSED" and ladder.states("server")[-1] == "CLOSED"
    assert ladder.rows[-1].kind == "rst"


def test_a_retransmission_is_marked():
    segments = full_connection()[:4] + [seg(0.0035, CLIENT, PSH | ACK, CLIENT_ISN + 1, SERVER_ISN + 1, 5)]
    rows = build_ladder(segments).rows
    assert not rows[3].retransmission and rows[4].retransmission and "retransmission" in rows[4].label


def test_tcpd_transitions_replace_the_inferred_ones_and_timers_get_a_row():
    segments = full_connection()
    real = [StateEvent(0.000, CLIENT, SERVER, "CLOSED", "SYN_SENT", "active open (connect) / SYN"),
            StateEvent(0.001, CLIENT, SERVER, "SYN_SENT", "ESTABLISHED", "SYN+ACK / ACK"),
            StateEvent(0.010, CLIENT, SERVER, "ESTABLISHED", "FIN_WAIT_1", "close / FIN (active close)"),
            StateEvent(0.011, CLIENT, SERVER, "FIN_WAIT_1", "FIN_WAIT_2", "ACK of FIN"),
            StateEvent(0.200, CLIENT, SERVER, "FIN_WAIT_2", "TIME_WAIT", "FIN / ACK"),
            StateEvent(1.200, CLIENT, SERVER, "TIME_WAIT", "CLOSED", "2MSL timeout"),
            StateEvent(0.0, ("198.18.0.1", 9), ("198.18.0.2", 9), "CLOSED", "SYN_SENT", "another connection")]
    ladder = build_ladder(segments, real)
    assert ladder.states("client") == ["CLOSED"] + CLIENT_STATES + ["CLOSED"]
    assert ladder.states("server") == ["LISTEN"] + SERVER_STATES
    assert not any(m.inferred for m in ladder.marks if m.left)
    assert all(m.inferred for m in ladder.marks if not m.left)
    assert ladder.rows[-1].segment is None and ladder.rows[-1].kind == "timer"
    ET.fromstring(render_svg(ladder).encode())
    assert "2MSL timer expires" in render_svg(ladder)


def test_ladder_from_a_pcap_file():
    frames = []
    for s in full_connection():
        tcp = TcpSegment(s.src[1], s.dst[1], s.seq, s.ack, TcpFlags(s.flags), s.window, payload=b"x" * s.length)
        src, dst = str_to_addr(s.src[0]), str_to_addr(s.dst[0])
        frames.append(pcap.record(1700000000 + s.time, build_ipv4(src, dst, PROTO_TCP, build_tcp(tcp, src, dst))))
    # an ICMP packet and a second connection that the ladder leaves out
    frames.append(pcap.record(1700000001, build_ipv4(str_to_addr("198.18.0.1"), str_to_addr("198.18.0.2"), 1, b"\x08")))
    other = TcpSegment(5555, 22, 1, 0, TcpFlags.SYN, 1000)
    a, b = str_to_addr("198.18.0.1"), str_to_addr("198.18.0.2")
    frames.append(pcap.record(1700000002, build_ipv4(a, b, PROTO_TCP, build_tcp(other, a, b))))
    segments = segments_from_pcap(pcap.file_header() + b"".join(frames))
    assert len(segments) == 11
    assert connections(segments) == [(CLIENT, SERVER), (("198.18.0.1", 5555), ("198.18.0.2", 22))]
    assert select_connection(segments, "22") == (("198.18.0.1", 5555), ("198.18.0.2", 22))
    assert select_connection(segments, "198.18.0.2:8080") == (CLIENT, SERVER)
    assert select_connection(segments, "198.18.0.9:8080") is None
    ladder = build_ladder(segments)
    assert ladder.states("client") == ["CLOSED"] + CLIENT_STATES
    assert ladder.states("server") == ["LISTEN"] + SERVER_STATES


def test_events_from_tcpds_trace():
    events = [{"n": 1, "kind": "state", "time": 1.0, "conn": 3, "local": ["198.18.0.2", 8080],
               "remote": ["198.18.0.1", 41234], "from": "LISTEN", "to": "SYN_RCVD", "cause": "SYN"},
              {"n": 2, "kind": "segment", "time": 1.0, "dir": "out", "src": ["198.18.0.2", 8080],
               "dst": ["198.18.0.1", 41234], "flags": 0x12, "seq": 9, "ack": 2, "len": 0, "window": 100}]
    segments, states = events_from_trace(events)
    assert segments == [SegmentEvent(1.0, SERVER, CLIENT, 0x12, 9, 2, 0, 100)]
    assert states == [StateEvent(1.0, SERVER, CLIENT, "LISTEN", "SYN_RCVD", "SYN")]


def test_a_connection_seen_midway_starts_established():
    segments = full_connection()[3:6]
    ladder = build_ladder(segments)
    assert ladder.left_role == "" and ladder.states("left") == ["ESTABLISHED"]
    assert ladder.rows[0].label == "PSH+ACK  seq 0  ack 0  len 5"
    ET.fromstring(render_svg(ladder).encode())


def test_long_connections_are_cut():
    segments = full_connection()[:3] + [seg(0.003 + i * 1e-4, CLIENT, ACK, CLIENT_ISN + 1 + i, SERVER_ISN + 1, 1)
                                        for i in range(50)]
    ladder = build_ladder(segments, max_rows=20)
    assert len(ladder.rows) == 20 and ladder.omitted == 33
    assert "33 more" in render_svg(ladder) and "33 more" in render_text(ladder)


def test_endpoints_and_errors():
    assert parse_endpoint("198.18.0.1:80") == ("198.18.0.1", 80)
    assert parse_endpoint("80") == (None, 80) and parse_endpoint(":80") == (None, 80)
    with pytest.raises(ValueError):
        parse_endpoint("host:http")
    with pytest.raises(ValueError):
        build_ladder([])


def test_special_characters_are_escaped():
    ladder = build_ladder(full_connection(), source="<capture & co>")
    root = ET.fromstring(render_svg(ladder).encode())
    assert any("<capture & co>" in (t.text or "") for t in root.iter(SVG + "text"))


def test_a_refused_connection_has_no_listener():
    segments = [seg(0.0, CLIENT, SYN, CLIENT_ISN), seg(0.001, SERVER, RST | ACK, 0, CLIENT_ISN + 1)]
    ladder = build_ladder(segments)
    assert ladder.states("client") == ["CLOSED", "SYN_SENT", "CLOSED"]
    assert ladder.states("server") == ["CLOSED"]
    assert "ECONNREFUSED" in render_svg(ladder)


def test_the_stacks_side_is_tagged_when_known():
    ladder = build_ladder(full_connection(), local={SERVER})
    assert (ladder.left_tag, ladder.right_tag) == ("peer", "netstack")
    svg = render_svg(ladder)
    assert "this stack" in svg and "its peer" in svg
    assert "this stack" not in render_svg(build_ladder(full_connection()))
