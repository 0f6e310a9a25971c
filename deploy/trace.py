"""`netstack pcap`, `netstack impair` and `netstack trace`: looking inside a
running stack.  The CLI's side of it; nicd and tcpd do the recording."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

from deploy import control as ctl
from deploy import ladder as lad

POLL = 0.05                 # seconds between two questions to a service
TRACE_LEASE = 5.0           # tcpd records segments this long after the last question


class CommandError(RuntimeError):
    """A foreseeable fault of these commands, shown as one line."""


def _one_line_errors(command):
    """A CommandError is `netstack: message` and exit status 1."""
    def guarded(*args, **kwargs) -> int:
        try:
            return command(*args, **kwargs)
        except CommandError as exc:
            print(f"netstack: {exc}", file=sys.stderr)
            return 1
    guarded.__name__ = guarded.__qualname__ = command.__name__
    guarded.__doc__ = command.__doc__
    return guarded


@contextlib.contextmanager
def interruptible():
    """SIGTERM ends a long-running command the way Ctrl-C does."""
    def on_term(signum, frame):
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- netstack pcap ----------------------------------------------------------------

@_one_line_errors
def pcap_command(run_dir, path: str, count: int | None, seconds: float | None) -> int:
    path = os.path.abspath(path)
    if not os.path.isdir(os.path.dirname(path)):
        raise CommandError(f"no such directory: {os.path.dirname(path)}")
    with interruptible():
        status = ctl.control(run_dir, "nicd", "pcap_start", path=path, count=count, seconds=seconds)
        ident = status["id"]
        limits = [f"{count} packets" if count else "", f"{seconds:g} s" if seconds else ""]
        until = " or ".join(x for x in limits if x) or "Ctrl-C"
        _say(f"capturing to {path} until {until}")
        try:
            while status["running"]:
                time.sleep(POLL)
                status = ctl.control(run_dir, "nicd", "pcap_status", id=ident)
        except KeyboardInterrupt:
            status = ctl.control(run_dir, "nicd", "pcap_stop", id=ident)
    print(f"{status['packets']} packets written to {path}")
    return 0


# -- netstack impair --------------------------------------------------------------

@_one_line_errors
def impair_command(run_dir, args) -> int:
    knobs = {"loss": args.loss, "delay": args.delay, "jitter": args.jitter, "reorder": args.reorder,
             "duplicate": args.duplicate}
    if args.off:
        state = ctl.control(run_dir, "nicd", "impair_off")
    elif any(v is not None for v in knobs.values()) or args.direction is not None or args.seed is not None:
        settings = {k: v for k, v in knobs.items() if v is not None}
        for key in ("delay", "jitter"):            # milliseconds on the command line, seconds in nicd
            if key in settings:
                settings[key] = settings[key] / 1000.0
        settings["direction"] = args.direction or "both"
        if args.seed is not None:
            settings["seed"] = args.seed
        state = ctl.control(run_dir, "nicd", "impair", **settings)
    else:
        state = ctl.control(run_dir, "nicd", "impair_show")
    if args.json:
        print(json.dumps(state, indent=1, sort_keys=True))
        return 0
    counters = state["counters"]
    print(f"impairment: {state['describe']}" if state["on"] else "impairment: off")
    print("  " + ", ".join(f"{name.removeprefix('impair_')} {value}" for name, value in sorted(counters.items()))
          + (f"; {state['held']} packets held" if state.get("held") else ""))
    return 0


# -- netstack trace ---------------------------------------------------------------

class _Printer:
    """One line per event, times from the first one, sequence numbers relative
    to each side's SYN when the trace saw it."""

    def __init__(self, wanted: tuple[str | None, int] | None):
        self.wanted = wanted
        self.t0: float | None = None
        self.isn: dict[tuple, int] = {}

    def wants(self, event: dict) -> bool:
        if self.wanted is None:
            return True
        if event["kind"] == "segment":
            ends = (tuple(event["src"]), tuple(event["dst"]))
        else:
            ends = (tuple(event["local"]), tuple(event["remote"]))
        return any(lad._matches(end, self.wanted) for end in ends)

    def line(self, event: dict) -> str:
        if self.t0 is None:
            self.t0 = event["time"]
        stamp = f"{event['time'] - self.t0:11.6f}"
        if event["kind"] == "state":
            local = _endpoint(event["local"])
            remote = _endpoint(event["remote"])
            return (f"{stamp}  {local:>21}    {remote:<21}  {event['from']} -> {event['to']}"
                    f"  ({event['cause']})")
        src, dst = tuple(event["src"]), tuple(event["dst"])
        flags = event["flags"]
        if flags & lad.SYN:
            self.isn[src] = event["seq"]
        seq = (event["seq"] - self.isn.get(src, 0)) % lad.MOD
        text = f"{lad.flag_names(flags)} seq {seq}"
        if flags & lad.ACK:
            text += f" ack {(event['ack'] - self.isn.get(dst, 0)) % lad.MOD}"
        text += f" win {event['window']} len {event['len']}"
        if event["dir"] == "out":
            return f"{stamp}  {_endpoint(src):>21} -> {_endpoint(dst):<21}  {text}"
        return f"{stamp}  {_endpoint(dst):>21} <- {_endpoint(src):<21}  {text}"


def _endpoint(endpoint) -> str:
    addr, port = endpoint
    return "*" if not port and addr in ("0.0.0.0", "") else f"{addr}:{port}"


@_one_line_errors
def trace_command(run_dir_of, args) -> int:
    """`run_dir_of()` finds the running instance (not needed with --pcap)."""
    try:
        wanted = lad.parse_endpoint(args.conn) if args.conn else None
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if args.pcap:
        try:
            data = Path(args.pcap).read_bytes()
        except OSError as exc:
            raise CommandError(f"cannot read {args.pcap}: {exc.strerror}") from None
        try:
            segments = lad.segments_from_pcap(data)
        except ValueError as exc:
            raise CommandError(f"{args.pcap}: {exc}") from None
        states: list = []
        source = f"from the capture {os.path.basename(args.pcap)}"
        local: set = set()
    else:
        segments, states, local = _trace_live(run_dir_of(), args, wanted)
        source = "traced by tcpd"
    if not segments:
        if args.ladder or args.pcap:
            raise CommandError("no TCP segments to draw" + ("" if args.pcap else " (was anything connecting?)"))
        return 0
    conn = lad.select_connection(segments, args.conn)
    if conn is None:
        raise CommandError(f"no connection with an end at {args.conn}")
    others = len(lad.connections(segments)) - 1
    ladder = lad.build_ladder(segments, states, conn, source=source, local=local)
    print()
    print(lad.render_text(ladder), end="")
    if others:
        print(f"({others} other connection{'s' if others > 1 else ''} not drawn: choose one with --conn ADDR:PORT)")
    if args.ladder:
        Path(args.ladder).write_text(lad.render_svg(ladder))
        print(f"ladder written to {args.ladder}")
    return 0


def _trace_live(run_dir, args, wanted) -> tuple[list, list, set]:
    """Print tcpd's events as they come; return the segments, the state changes
    and the stack's own endpoints seen."""
    printer = _Printer(wanted)
    collected: list[dict] = []
    with interruptible():
        started = ctl.control(run_dir, "tcpd", "trace_start", lease=TRACE_LEASE)
        since, incarnation = started["next"], None
        deadline = None if args.seconds is None else time.monotonic() + args.seconds
        _say("tracing tcpd's state transitions and segments"
             + (f" for {args.seconds:g} s" if args.seconds else "") + " (Ctrl-C to stop)")

        def fetch() -> int:
            nonlocal since, incarnation
            reply = ctl.control(run_dir, "tcpd", "trace", since=since, lease=TRACE_LEASE)
            if incarnation is not None and reply["incarnation"] != incarnation:
                _say("(tcpd restarted: its connections are gone; tracing the new one)")
                since, incarnation = 1, reply["incarnation"]
                return 1
            incarnation = reply["incarnation"]
            if reply.get("lost"):
                _say(f"({reply['lost']} events lost: they left tcpd's ring before they were read)")
            for event in reply["events"]:
                if printer.wants(event):
                    collected.append(event)
                    print(printer.line(event), flush=True)
            since = reply["next"]
            return len(reply["events"])

        try:
            while deadline is None or time.monotonic() < deadline:
                try:
                    if fetch() < 100:
                        time.sleep(POLL)
                except ctl.ControlError as exc:      # tcpd restarting: keep asking
                    _say(f"({exc})")
                    time.sleep(0.5)
            fetch()
        except KeyboardInterrupt:
            with contextlib.suppress(ctl.ControlError, KeyboardInterrupt):
                while fetch():
                    pass
        finally:
            with contextlib.suppress(ctl.ControlError):
                ctl.control(run_dir, "tcpd", "trace_stop")
    segments, states = lad.events_from_trace(collected)
    local = {tuple(e["src"] if e["dir"] == "out" else e["dst"]) for e in collected if e["kind"] == "segment"}
    return segments, states, local
