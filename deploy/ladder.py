"""Ladder diagrams of one TCP connection, like the figures of the seed.

Two vertical lines, the client on the left and the server on the right; each
segment is a slanted arrow from the sender's line to the receiver's, labelled
with its flags, sequence and acknowledgment numbers relative to each side's
initial sequence number (what tcpdump shows without -S) and its length; each
side's TCP state is written beside its line where it changes, and the line is
coloured by the state it is in.

Pure: segments and state transitions in, an SVG document or text out.  The
segments come from a pcap file (`segments_from_pcap`) or from tcpd's trace
(`events_from_trace`); states are the transitions tcpd recorded where there
are some, otherwise what a small TCP state tracker infers from the segments.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from proto.wire import pcap
from proto.wire.ipv4 import PROTO_TCP, Ipv4ParseError, addr_to_str, parse_ipv4
from proto.wire.tcp import TcpParseError, parse_tcp

Endpoint = tuple[str, int]

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
_FLAG_NAMES = ((SYN, "SYN"), (RST, "RST"), (FIN, "FIN"), (PSH, "PSH"), (URG, "URG"), (ECE, "ECE"),
               (CWR, "CWR"), (ACK, "ACK"))
MOD = 1 << 32


# -- the input -------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SegmentEvent:
    """One segment on the wire, as a capture or tcpd's trace saw it."""
    time: float
    src: Endpoint
    dst: Endpoint
    flags: int
    seq: int
    ack: int
    length: int                 # payload bytes
    window: int = 0


@dataclass(frozen=True, slots=True)
class StateEvent:
    """One state change of one side, as tcpd recorded it."""
    time: float
    endpoint: Endpoint
    peer: Endpoint
    from_state: str
    to_state: str
    cause: str = ""


def segments_from_pcap(data: bytes) -> list[SegmentEvent]:
    """Every TCP segment of a pcap file (first fragments only; checksums not checked)."""
    segments = []
    for stamp, packet in pcap.ip_packets(data):
        try:
            header, payload = parse_ipv4(packet)
        except Ipv4ParseError:
            continue
        if header.protocol != PROTO_TCP or header.frag_offset:
            continue
        try:
            tcp = parse_tcp(bytes(payload), header.src, header.dst, verify_checksum=False)
        except TcpParseError:
            continue
        segments.append(SegmentEvent(stamp, (addr_to_str(header.src), tcp.src_port),
                                     (addr_to_str(header.dst), tcp.dst_port), int(tcp.flags),
                                     tcp.seq, tcp.ack, len(tcp.payload), tcp.window))
    return segments


def events_from_trace(events: list[dict]) -> tuple[list[SegmentEvent], list[StateEvent]]:
    """tcpd's trace events (control "trace") as segments and state changes."""
    segments, states = [], []
    for e in events:
        if e.get("kind") == "segment":
            segments.append(SegmentEvent(e["time"], tuple(e["src"]), tuple(e["dst"]), e["flags"], e["seq"],
                                         e["ack"], e["len"], e.get("window", 0)))
        elif e.get("kind") == "state":
            states.append(StateEvent(e["time"], tuple(e["local"]), tuple(e["remote"]), e["from"], e["to"],
                                     e.get("cause", "")))
    return segments, states


def flag_names(flags: int) -> str:
    names = [name for bit, name in _FLAG_NAMES if flags & bit]
    return "+".join(names) if names else "none"


def parse_endpoint(text: str) -> tuple[str | None, int]:
    """"198.18.0.1:8080" -> ("198.18.0.1", 8080); "8080" or ":8080" -> (None, 8080)."""
    host, _, port = text.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not ADDR:PORT or PORT: {text!r}")
    return (host or None), int(port)


def _matches(endpoint: Endpoint, wanted: tuple[str | None, int]) -> bool:
    return endpoint[1] == wanted[1] and (wanted[0] is None or endpoint[0] == wanted[0])


def connections(segments: list[SegmentEvent]) -> list[tuple[Endpoint, Endpoint]]:
    """The connections in `segments`, in order of first appearance, each as
    (client, server): the side that sent the first bare SYN is the client; with
    no SYN seen, the sender of the first segment."""
    found: dict[frozenset, tuple[Endpoint, Endpoint, bool]] = {}     # (client, server, opened by a SYN)
    for seg in segments:
        key = frozenset((seg.src, seg.dst))
        if seg.flags & SYN and not seg.flags & ACK:
            if key not in found or not found[key][2]:
                found[key] = (seg.src, seg.dst, True)
        elif key not in found:
            found[key] = (seg.src, seg.dst, False)
    return [(client, server) for client, server, _ in found.values()]


def select_connection(segments: list[SegmentEvent], wanted: str | None = None) -> tuple[Endpoint, Endpoint] | None:
    """The connection `wanted` (ADDR:PORT or PORT of either end), else the first
    one that opened with a SYN, else the first one."""
    conns = connections(segments)
    if wanted is not None:
        target = parse_endpoint(wanted)
        conns = [c for c in conns if _matches(c[0], target) or _matches(c[1], target)]
        return conns[0] if conns else None
    with_syn = [c for c in conns if any(s.src == c[0] and s.flags & SYN and not s.flags & ACK for s in segments)]
    return (with_syn or conns or [None])[0]


# -- the model of a picture ------------------------------------------------------

@dataclass(slots=True)
class Row:
    """One step down the ladder: a segment, or a state change with no segment (a timer)."""
    time: float
    segment: SegmentEvent | None = None
    from_left: bool = True
    label: str = ""
    detail: str = ""
    kind: str = "ack"               # syn, data, ack, fin, rst, timer
    retransmission: bool = False


@dataclass(slots=True)
class Mark:
    """A state written beside one side's line: at a row's send end, its arrival end, or alone."""
    row: int
    left: bool
    state: str
    at: str                         # "send", "recv" or "alone"
    note: str = ""                  # the user call or timer behind it, as in the seed's figure
    inferred: bool = True
    previous: str = ""              # the state it left


@dataclass(slots=True)
class Ladder:
    left: Endpoint
    right: Endpoint
    left_role: str                  # "client", "server" or ""
    right_role: str
    left_initial: str
    right_initial: str
    rows: list[Row] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    left_isn: int | None = None
    right_isn: int | None = None
    source: str = ""
    omitted: int = 0                # segments left out (max_rows)
    notes: list[str] = field(default_factory=list)
    left_tag: str = ""              # "netstack" or "peer" when known
    right_tag: str = ""

    def ordered_marks(self) -> list[Mark]:
        order = {"send": 0, "recv": 1, "alone": 1}
        return sorted(self.marks, key=lambda m: (m.row, order[m.at]))

    def states(self, side: str) -> list[str]:
        """The states one side went through, top to bottom, its initial state first.
        `side` is "left", "right", "client" or "server"."""
        left = side == "left" or (side == self.left_role and side != "right")
        initial = self.left_initial if left else self.right_initial
        return [initial] + [m.state for m in self.ordered_marks() if m.left == left]


# -- inferring states from segments ----------------------------------------------

class _Side:
    __slots__ = ("state", "isn", "fin_ack")

    def __init__(self, state: str):
        self.state = state
        self.isn: int | None = None          # sequence number of its SYN
        self.fin_ack: int | None = None      # the ack that acknowledges its FIN


def _ge(a: int, b: int) -> bool:
    return ((a - b) % MOD) < (1 << 31)


_SEND_NOTES = {("CLOSED", "SYN_SENT"): "connect()", ("ESTABLISHED", "FIN_WAIT_1"): "close()",
               ("SYN_RCVD", "FIN_WAIT_1"): "close()", ("CLOSE_WAIT", "LAST_ACK"): "close()"}
_RECV_NOTES = {("SYN_SENT", "ESTABLISHED"): "connect() returns", ("SYN_RCVD", "ESTABLISHED"): "accept() returns",
               ("ESTABLISHED", "CLOSE_WAIT"): "recv() returns 0", ("FIN_WAIT_2", "TIME_WAIT"): "2MSL timer set",
               ("FIN_WAIT_1", "TIME_WAIT"): "2MSL timer set", ("CLOSING", "TIME_WAIT"): "2MSL timer set",
               ("TIME_WAIT", "CLOSED"): "2MSL timer expires"}


def _note(old: str, new: str, at: str, cause: str = "") -> str:
    if new == "CLOSED" and "reset" in cause.lower():
        return "reset"
    table = _SEND_NOTES if at == "send" else _RECV_NOTES
    return table.get((old, new), "")


def _track(rows: list[Row], left_initial: str, right_initial: str) -> list[Mark]:
    """The states each side must have gone through for these segments (RFC 9293's
    diagram, the seed's table): a small tracker per side, driven by what it sends
    and what reaches it."""
    sides = {True: _Side(left_initial), False: _Side(right_initial)}
    marks: list[Mark] = []

    def move(index: int, left: bool, new: str, at: str) -> None:
        side = sides[left]
        if side.state == new:
            return
        old = side.state
        side.state = new
        if at == "rst":
            note = "connect() fails: ECONNREFUSED" if old == "SYN_SENT" else "reset"
            marks.append(Mark(index, left, new, "recv", note, previous=old))
            return
        # one segment, two moves (a FIN+ACK that also acknowledges our FIN takes
        # FIN_WAIT_1 through FIN_WAIT_2 to TIME_WAIT): one mark, as in the diagram
        if marks and marks[-1].row == index and marks[-1].left == left and marks[-1].at == at:
            old = marks.pop().previous
        marks.append(Mark(index, left, new, at, _note(old, new, at), previous=old))
    for index, row in enumerate(rows):
        seg = row.segment
        if seg is None:
            continue
        sender, receiver = row.from_left, not row.from_left
        me, peer = sides[sender], sides[receiver]
        flags = seg.flags
        # -- the sender, as it sends
        if flags & RST:
            if me.state not in ("CLOSED", "LISTEN"):
                move(index, sender, "CLOSED", "send")
        elif flags & SYN:
            me.isn = seg.seq
            if not flags & ACK and me.state == "CLOSED":
                move(index, sender, "SYN_SENT", "send")
            elif flags & ACK and me.state in ("LISTEN", "CLOSED", "SYN_SENT"):
                move(index, sender, "SYN_RCVD", "send")
        if flags & FIN and not flags & RST:
            me.fin_ack = (seg.seq + seg.length + (1 if flags & SYN else 0) + 1) % MOD
            if me.state in ("ESTABLISHED", "SYN_RCVD"):
                move(index, sender, "FIN_WAIT_1", "send")
            elif me.state == "CLOSE_WAIT":
                move(index, sender, "LAST_ACK", "send")
        # -- the receiver, as it arrives
        if flags & RST:
            if peer.state not in ("CLOSED", "LISTEN"):
                move(index, receiver, "CLOSED", "rst")
            continue
        if flags & SYN and not flags & ACK and peer.state in ("LISTEN", "SYN_SENT"):
            move(index, receiver, "SYN_RCVD", "recv")
        if flags & ACK:
            acked_syn = peer.isn is not None and _ge(seg.ack, (peer.isn + 1) % MOD)
            if acked_syn and (peer.state == "SYN_RCVD" or peer.state == "SYN_SENT" and flags & SYN):
                move(index, receiver, "ESTABLISHED", "recv")
            if peer.fin_ack is not None and _ge(seg.ack, peer.fin_ack):
                if peer.state == "FIN_WAIT_1":
                    move(index, receiver, "FIN_WAIT_2", "recv")
                elif peer.state == "CLOSING":
                    move(index, receiver, "TIME_WAIT", "recv")
                elif peer.state == "LAST_ACK":
                    move(index, receiver, "CLOSED", "recv")
        if flags & FIN:
            if peer.state in ("ESTABLISHED", "SYN_RCVD"):
                move(index, receiver, "CLOSE_WAIT", "recv")
            elif peer.state == "FIN_WAIT_1":
                move(index, receiver, "CLOSING", "recv")
            elif peer.state == "FIN_WAIT_2":
                move(index, receiver, "TIME_WAIT", "recv")
    return marks


# -- building the ladder ---------------------------------------------------------

def _kind(flags: int, length: int) -> str:
    if flags & RST:
        return "rst"
    if flags & SYN:
        return "syn"
    if flags & FIN:
        return "fin"
    if length:
        return "data"
    return "ack"


def build_ladder(segments: list[SegmentEvent], states: list[StateEvent] = (),
                 conn: tuple[Endpoint, Endpoint] | None = None, source: str = "",
                 max_rows: int = 400, local: set[Endpoint] | frozenset = frozenset()) -> Ladder:
    """The ladder of one connection: `conn` as (client, server), or the one
    `select_connection` picks.  `states` are tcpd's real transitions (any
    connection; those of this one replace what the tracker infers for its side).
    `local`: the stack's own endpoints, when known, tagged "netstack" in the picture."""
    if conn is None:
        conn = select_connection(segments)
    if conn is None:
        raise ValueError("no TCP segment to draw")
    left, right = conn
    mine = [s for s in segments if {s.src, s.dst} == {left, right}]
    mine.sort(key=lambda s: s.time)        # stable: equal times keep their recorded order
    opened = any(s.src == left and s.flags & SYN and not s.flags & ACK for s in mine)
    # a server whose first answer is a reset had no listener: the connection is refused
    first_answer = next((s for s in mine if s.src == right), None)
    refused = opened and first_answer is not None and bool(first_answer.flags & RST)
    ladder = Ladder(left, right, "client" if opened else "", "server" if opened else "",
                    "CLOSED" if opened else "ESTABLISHED",
                    ("CLOSED" if refused else "LISTEN") if opened else "ESTABLISHED", source=source)
    if local:
        ladder.left_tag = "netstack" if left in local else "peer"
        ladder.right_tag = "netstack" if right in local else "peer"
    if len(mine) > max_rows:
        ladder.omitted = len(mine) - max_rows
        mine = mine[:max_rows]

    # relative sequence numbers: each side's ISN, or its first sequence number
    isn: dict[Endpoint, int] = {}
    for s in mine:
        if s.flags & SYN:
            isn[s.src] = s.seq
    for s in mine:
        isn.setdefault(s.src, s.seq)
    ladder.left_isn, ladder.right_isn = isn.get(left), isn.get(right)

    sent_end: dict[Endpoint, int] = {}
    for s in mine:
        from_left = s.src == left
        rel_seq = (s.seq - isn[s.src]) % MOD
        parts = [flag_names(s.flags), f"seq {rel_seq}"]
        if s.flags & ACK:
            base = isn.get(s.dst)
            parts.append(f"ack {(s.ack - base) % MOD if base is not None else s.ack}")
        if s.length:
            parts.append(f"len {s.length}")
        seg_len = s.length + (1 if s.flags & SYN else 0) + (1 if s.flags & FIN else 0)
        end = (s.seq + seg_len) % MOD
        retransmission = False
        if seg_len and s.src in sent_end and not _ge(s.seq, sent_end[s.src]) and not s.flags & RST:
            retransmission = True
        if s.src not in sent_end or _ge(end, sent_end[s.src]):
            sent_end[s.src] = end
        label = "  ".join(parts) + ("  (retransmission)" if retransmission else "")
        ladder.rows.append(Row(s.time, s, from_left, label, f"win {s.window}", _kind(s.flags, s.length),
                               retransmission))

    inferred = _track(ladder.rows, ladder.left_initial, ladder.right_initial)
    ladder.marks = _merge_real_states(ladder, inferred, [st for st in states if {st.endpoint, st.peer} == {left, right}])
    sides_real = {m.left for m in ladder.marks if not m.inferred}
    for is_left, endpoint in ((True, left), (False, right)):
        how = "from tcpd's transitions" if is_left in sides_real else "inferred from the segments"
        ladder.notes.append(f"states of {endpoint[0]}:{endpoint[1]} {how}")
    return ladder


def _merge_real_states(ladder: Ladder, inferred: list[Mark], real: list[StateEvent]) -> list[Mark]:
    """Use tcpd's transitions for the side it recorded, placed where the tracker
    put the same state (or, for a change no segment explains, by time)."""
    marks = list(inferred)
    for is_left, endpoint in ((True, ladder.left), (False, ladder.right)):
        own = sorted((st for st in real if st.endpoint == endpoint), key=lambda st: st.time)
        if not own:
            continue
        if is_left:
            ladder.left_initial = own[0].from_state
        else:
            ladder.right_initial = own[0].from_state
        guesses = [m for m in marks if m.left == is_left]
        marks = [m for m in marks if m.left != is_left]
        used = 0
        for st in own:
            match = next((i for i in range(used, len(guesses)) if guesses[i].state == st.to_state), None)
            if match is not None:
                guess = guesses[match]
                used = match + 1
                marks.append(Mark(guess.row, is_left, st.to_state, guess.at,
                                  guess.note or _note(st.from_state, st.to_state, guess.at, st.cause), False,
                                  st.from_state))
                continue
            # no segment explains it (a timer, a reset the capture missed): a row of its own
            position = sum(1 for row in ladder.rows if row.time <= st.time)
            ladder.rows.insert(position, Row(st.time, None, is_left, st.cause, "", "timer"))
            for m in marks:
                if m.row >= position:
                    m.row += 1
            for g in guesses:
                if g.row >= position:
                    g.row += 1
            marks.append(Mark(position, is_left, st.to_state, "alone",
                              _note(st.from_state, st.to_state, "recv", st.cause) or st.cause, False,
                              st.from_state))
    return marks


# -- SVG -------------------------------------------------------------------------

STATE_COLOURS = {
    "CLOSED": "#9aa0a6", "LISTEN": "#8e7cc3",
    "SYN_SENT": "#f29900", "SYN_RCVD": "#f29900",
    "ESTABLISHED": "#1e8e3e",
    "FIN_WAIT_1": "#d93025", "FIN_WAIT_2": "#d93025", "CLOSING": "#d93025",
    "CLOSE_WAIT": "#e8710a", "LAST_ACK": "#e8710a",
    "TIME_WAIT": "#7b1fa2",
}
ARROW_COLOURS = {"syn": "#1a73e8", "data": "#188038", "ack": "#5f6368", "fin": "#c5221f", "rst": "#8b0000",
                 "timer": "#7b1fa2"}
ARROW_NAMES = {"syn": "SYN (opens)", "data": "data", "ack": "ACK only", "fin": "FIN (closes)", "rst": "RST"}

SANS = "'DejaVu Sans', 'Helvetica Neue', Helvetica, Arial, sans-serif"
MONO = "'DejaVu Sans Mono', Menlo, Consolas, 'Liberation Mono', monospace"

WIDTH = 1100
LEFT_X, RIGHT_X = 360, 820
HEAD_Y = 78                 # top of the endpoint boxes
LINE_TOP = 150
FIRST_ROW = 200
ROW_H, SLANT, ALONE_H = 64, 36, 46
BAR_W = 8
BADGE_W, BADGE_H = 112, 22


def _fmt_time(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.3f} ms"
    return f"{seconds:.3f} s"


def _row_layout(ladder: Ladder) -> list[tuple[float, float]]:
    """(top y, arrival y) of every row."""
    y, out = FIRST_ROW, []
    for row in ladder.rows:
        if row.segment is None:
            out.append((y + ALONE_H / 2 - 10, y + ALONE_H / 2 - 10))
            y += ALONE_H
        else:
            out.append((y, y + SLANT))
            y += ROW_H
    return out


def _mark_y(mark: Mark, ladder: Ladder, layout: list[tuple[float, float]]) -> float:
    top, arrive = layout[mark.row]
    if mark.at == "send":
        return top
    return arrive


def render_svg(ladder: Ladder) -> str:
    layout = _row_layout(ladder)
    bottom = (layout[-1][1] if layout else FIRST_ROW) + 60
    legend_y = bottom + 34
    height = int(legend_y + 24 + 18 * len(ladder.notes) + 30)
    t0 = ladder.rows[0].time if ladder.rows else 0.0
    out: list[str] = []
    add = out.append
    add('<?xml version="1.0" encoding="UTF-8"?>')
    add(f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="{escape(SANS)}">')
    title = f"TCP {ladder.left[0]}:{ladder.left[1]} \u2194 {ladder.right[0]}:{ladder.right[1]}"
    add(f"<title>{escape(title)}</title>")
    add("<defs>")
    for kind, colour in ARROW_COLOURS.items():
        add(f'<marker id="head-{kind}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="9" markerHeight="9" '
            f'markerUnits="userSpaceOnUse" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>')
    add('<filter id="shadow" x="-10%" y="-10%" width="120%" height="140%">'
        '<feDropShadow dx="0" dy="1" stdDeviation="1.2" flood-opacity="0.25"/></filter>')
    add("</defs>")
    add(f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>')

    # title and subtitle
    add(f'<text x="{WIDTH / 2}" y="32" text-anchor="middle" font-size="20" font-weight="bold" '
        f'fill="#202124">{escape(title)}</text>')
    segs = sum(1 for r in ladder.rows if r.segment is not None)
    span = (ladder.rows[-1].time - t0) if ladder.rows else 0.0
    subtitle = f"{segs} segments in {_fmt_time(span)}"
    if ladder.omitted:
        subtitle += f" (the first {segs}; {ladder.omitted} more not drawn)"
    if ladder.source:
        subtitle += f" \u00b7 {ladder.source}"
    add(f'<text x="{WIDTH / 2}" y="54" text-anchor="middle" font-size="13" fill="#5f6368">'
        f"{escape(subtitle)}</text>")

    # the endpoints
    for x, endpoint, role, tag in ((LEFT_X, ladder.left, ladder.left_role, ladder.left_tag),
                                   (RIGHT_X, ladder.right, ladder.right_role, ladder.right_tag)):
        box_y = HEAD_Y - (8 if tag else 0)
        add(f'<rect x="{x - 105}" y="{box_y}" width="210" height="{66 if tag else 52}" rx="10" '
            f'fill="{"#e8f0fe" if tag == "netstack" else "#f1f3f4"}" stroke="#dadce0" filter="url(#shadow)"/>')
        add(f'<text x="{x}" y="{box_y + 22}" text-anchor="middle" font-size="15" font-weight="bold" '
            f'letter-spacing="1.5" fill="#202124">{escape((role or "endpoint").upper())}</text>')
        add(f'<text x="{x}" y="{box_y + 41}" text-anchor="middle" font-size="13" font-family="{escape(MONO)}" '
            f'fill="#3c4043">{escape(f"{endpoint[0]}:{endpoint[1]}")}</text>')
        if tag:
            add(f'<text x="{x}" y="{box_y + 58}" text-anchor="middle" font-size="11" font-style="italic" '
                f'fill="#5f6368">{escape("this stack" if tag == "netstack" else "its peer")}</text>')
    add(f'<text x="88" y="{LINE_TOP - 8}" text-anchor="end" font-size="11" fill="#80868b">time</text>')

    # the phases of the connection, as tinted bands
    for first, last, name, tint in _phases(ladder):
        y0 = layout[first][0] - (26 if first == 0 else 14)
        y1 = (layout[last][1] + 28) if last + 1 >= len(layout) else layout[last + 1][0] - 14
        add(f'<rect x="100" y="{y0:.1f}" width="{WIDTH - 112}" height="{y1 - y0:.1f}" rx="6" fill="{tint}"/>')
        add(f'<text transform="translate({WIDTH - 20},{(y0 + y1) / 2:.1f}) rotate(90)" text-anchor="middle" '
            f'font-size="11" letter-spacing="2" fill="#80868b">{escape(name)}</text>')

    # the lines, coloured by state
    marks = ladder.ordered_marks()
    for is_left, x, initial in ((True, LEFT_X, ladder.left_initial), (False, RIGHT_X, ladder.right_initial)):
        stops = [(float(LINE_TOP), initial)] + [(_mark_y(m, ladder, layout), m.state) for m in marks
                                                 if m.left == is_left]
        stops.append((float(bottom), None))
        for (y0, state), (y1, _) in zip(stops, stops[1:]):
            if y1 > y0:
                add(f'<rect x="{x - BAR_W / 2}" y="{y0:.1f}" width="{BAR_W}" height="{y1 - y0:.1f}" '
                    f'fill="{STATE_COLOURS.get(state, "#9aa0a6")}" opacity="0.85"/>')
        add(f'<line x1="{x}" y1="{LINE_TOP}" x2="{x}" y2="{bottom}" stroke="#3c4043" stroke-width="1"/>')
        add(f'<line x1="{x - 14}" y1="{bottom}" x2="{x + 14}" y2="{bottom}" stroke="#3c4043" stroke-width="2"/>')

    # state badges: the initial state at the top, then each change
    badges = [(True, float(LINE_TOP + 14), ladder.left_initial, _initial_note(ladder, True), True),
              (False, float(LINE_TOP + 14), ladder.right_initial, _initial_note(ladder, False), True)]
    badges += [(m.left, _mark_y(m, ladder, layout), m.state, m.note, m.inferred) for m in marks]
    for is_left, y, state, note, inferred in badges:
        colour = STATE_COLOURS.get(state, "#5f6368")
        bx = LEFT_X - 14 - BADGE_W if is_left else RIGHT_X + 14
        add(f'<rect x="{bx}" y="{y - BADGE_H / 2:.1f}" width="{BADGE_W}" height="{BADGE_H}" rx="11" '
            f'fill="{colour}" filter="url(#shadow)"/>')
        add(f'<text x="{bx + BADGE_W / 2}" y="{y + 4.5:.1f}" text-anchor="middle" font-size="12" '
            f'font-weight="bold" fill="#ffffff">{escape(state)}</text>')
        if note:
            nx, anchor = (bx - 8, "end") if is_left else (bx + BADGE_W + 8, "start")
            add(f'<text x="{nx}" y="{y + 4:.1f}" text-anchor="{anchor}" font-size="11.5" font-style="italic" '
                f'fill="#5f6368">{escape(note)}</text>')

    # the segments
    for row, (top, arrive) in zip(ladder.rows, layout):
        if row.segment is None:
            x = LEFT_X if row.from_left else RIGHT_X
            add(f'<circle cx="{x}" cy="{top:.1f}" r="5" fill="{ARROW_COLOURS["timer"]}"/>')
            add(f'<text x="88" y="{top + 4:.1f}" text-anchor="end" font-size="11" fill="#80868b" '
                f'font-family="{escape(MONO)}">{escape(_fmt_time(row.time - t0))}</text>')
            continue
        colour = ARROW_COLOURS[row.kind]
        x0, x1 = (LEFT_X + BAR_W / 2, RIGHT_X - BAR_W / 2 - 1) if row.from_left else \
                 (RIGHT_X - BAR_W / 2, LEFT_X + BAR_W / 2 + 1)
        dash = ' stroke-dasharray="7 4"' if row.retransmission else ""
        add(f'<line x1="{x0}" y1="{top:.1f}" x2="{x1}" y2="{arrive:.1f}" stroke="{colour}" stroke-width="2.2"'
            f'{dash} marker-end="url(#head-{row.kind})"/>')
        add(f'<circle cx="{x0}" cy="{top:.1f}" r="3" fill="{colour}"/>')
        # the label runs along the arrow, read left to right
        lx0, ly0, lx1, ly1 = (x0, top, x1, arrive) if row.from_left else (x1, arrive, x0, top)
        angle = math.degrees(math.atan2(ly1 - ly0, lx1 - lx0))
        mx, my = (lx0 + lx1) / 2, (ly0 + ly1) / 2
        add(f'<g transform="translate({mx:.1f},{my:.1f}) rotate({angle:.2f})">'
            f'<text y="-7" text-anchor="middle" font-size="13" font-family="{escape(MONO)}" font-weight="bold" '
            f'fill="{colour}" stroke="#ffffff" stroke-width="4" stroke-linejoin="round" paint-order="stroke">'
            f"{escape(row.label)}</text>"
            f'<text y="16" text-anchor="middle" font-size="10.5" font-family="{escape(MONO)}" fill="#80868b" '
            f'stroke="#ffffff" stroke-width="3" paint-order="stroke">{escape(row.detail)}</text></g>')
        add(f'<text x="88" y="{top + 4:.1f}" text-anchor="end" font-size="11" fill="#80868b" '
            f'font-family="{escape(MONO)}">{escape(_fmt_time(row.time - t0))}</text>')

    # legend and notes
    x = 110
    for kind, name in ARROW_NAMES.items():
        colour = ARROW_COLOURS[kind]
        add(f'<line x1="{x}" y1="{legend_y}" x2="{x + 34}" y2="{legend_y}" stroke="{colour}" stroke-width="2.2" '
            f'marker-end="url(#head-{kind})"/>')
        add(f'<text x="{x + 42}" y="{legend_y + 4}" font-size="12" fill="#3c4043">{escape(name)}</text>')
        x += 42 + 7 * len(name) + 28
    add(f'<line x1="{x}" y1="{legend_y}" x2="{x + 34}" y2="{legend_y}" stroke="#5f6368" stroke-width="2.2" '
        f'stroke-dasharray="7 4"/>')
    add(f'<text x="{x + 42}" y="{legend_y + 4}" font-size="12" fill="#3c4043">retransmission</text>')
    notes = ["seq and ack are relative to each side's initial sequence number"
             + (f" (client {ladder.left_isn}, server {ladder.right_isn})" if ladder.left_role else
                f" ({ladder.left_isn}, {ladder.right_isn})")] + ladder.notes
    for i, note in enumerate(notes):
        add(f'<text x="110" y="{legend_y + 26 + 18 * i}" font-size="12" fill="#5f6368">{escape(note)}</text>')
    add("</svg>")
    return "\n".join(out) + "\n"


def _phases(ladder: Ladder) -> list[tuple[int, int, str, str]]:
    """(first row, last row, name, tint) of the handshake, the data transfer and the close."""
    rows = ladder.rows
    if not rows:
        return []
    closing = next((i for i, r in enumerate(rows) if r.segment is not None and r.segment.flags & (FIN | RST)),
                   len(rows))
    opened = 0
    if rows[0].segment is not None and rows[0].segment.flags & SYN:
        established = [m.row for m in ladder.marks if m.state == "ESTABLISHED"]
        opened = min(max(established) + 1 if established else 1, closing)
    phases = []
    if opened:
        phases.append((0, opened - 1, "HANDSHAKE", "#e8f0fe"))
    if closing > opened:
        phases.append((opened, closing - 1, "DATA", "#e6f4ea"))
    if closing < len(rows):
        phases.append((closing, len(rows) - 1, "CLOSE", "#fce8e6"))
    return phases


def _initial_note(ladder: Ladder, left: bool) -> str:
    state = ladder.left_initial if left else ladder.right_initial
    return {"LISTEN": "listen()", "CLOSED": "socket()"}.get(state, "")


# -- text ------------------------------------------------------------------------

def render_text(ladder: Ladder, span: int = 48) -> str:
    """The ladder for a terminal: one line per segment, states beside the lines."""
    t0 = ladder.rows[0].time if ladder.rows else 0.0
    state_w = 12
    lines = []
    name = lambda e, role: (f"{role} " if role else "") + f"{e[0]}:{e[1]}"
    left_head, right_head = name(ladder.left, ladder.left_role), name(ladder.right, ladder.right_role)
    left_bar, right_bar = 11 + 1 + state_w + 1, 11 + 1 + state_w + 1 + span + 1
    head = f"{'time':>11}".ljust(max(12, left_bar - len(left_head) // 2)) + left_head
    head = head.ljust(max(len(head) + 2, right_bar - len(right_head) // 2)) + right_head
    lines.append(head)
    by_row: dict[tuple[int, bool], list[str]] = {}
    for m in ladder.ordered_marks():
        by_row.setdefault((m.row, m.left), []).append(m.state)

    def line(time_text: str, left_state: str, middle: str, right_state: str) -> str:
        return f"{time_text:>11} {left_state:>{state_w}} |{middle}| {right_state}".rstrip()

    lines.append(line("", ladder.left_initial, " " * span, ladder.right_initial))
    for index, row in enumerate(ladder.rows):
        left_state = " ".join(by_row.get((index, True), []))
        right_state = " ".join(by_row.get((index, False), []))
        if row.segment is None:
            middle = f"({row.label})".center(span) if row.label else " " * span
        else:
            label = f" {row.label} "
            dashes = "- " if row.retransmission else "-"
            room = max(span - len(label) - 2, 2)
            before, after = room // 2, room - room // 2
            fill_a = (dashes * span)[:before]
            fill_b = (dashes * span)[:after]
            middle = (f"{fill_a}{label}{fill_b}>" if row.from_left else f"<{fill_a}{label}{fill_b}")
        lines.append(line(_fmt_time(row.time - t0), left_state, middle, right_state))
    if ladder.omitted:
        lines.append(f"{'':>11} {'':>{state_w}}  ... {ladder.omitted} more segments not shown")
    lines.append("")
    lines.append("seq and ack relative to each side's initial sequence number; " + "; ".join(ladder.notes))
    return "\n".join(lines) + "\n"
