"""Crafted segments from the kernel's side (scapy), checked against RFC 9293 and RFC 5961.

scapy speaks from 198.18.0.3, an address the kernel does not own, so the
kernel's TCP never answers the stack's segments with resets of its own.
"""
from __future__ import annotations

import threading

import libsock
from tests.e2e import netns as ns

PORT = 7300
SPOOF = "198.18.0.3"


def _crafted_exchange(stack_addr: str, port: int) -> dict:
    from scapy.all import IP, TCP, conf, sr1, send, AsyncSniffer
    conf.verb = 0
    ip = IP(src=SPOOF, dst=stack_addr)
    sport = 40123
    syn_ack = sr1(ip / TCP(sport=sport, dport=port, flags="S", seq=1000, options=[("MSS", 1460)]),
                  timeout=2, iface="tun0")
    out = {"syn_ack": syn_ack is not None and str(syn_ack[TCP].flags)}
    if syn_ack is None:
        return out
    our_seq, their_seq = 1001, syn_ack[TCP].seq + 1
    send(ip / TCP(sport=sport, dport=port, flags="A", seq=our_seq, ack=their_seq), iface="tun0")

    def exchange(segment, timeout=1.0):
        """Send one segment and return the stack's first answer on this connection, or None."""
        started = threading.Event()
        sniffer = AsyncSniffer(iface="tun0", count=1, started_callback=started.set,
                               lfilter=lambda p: TCP in p and p[IP].src == stack_addr and p[TCP].dport == sport)
        sniffer.start()
        started.wait(5)
        send(ip / segment, iface="tun0")
        sniffer.join(timeout=timeout)
        if sniffer.running:
            sniffer.stop()
        got = sniffer.results
        return got[0][TCP] if got else None

    def describe(answer):
        return None if answer is None else (str(answer.flags), answer.seq, answer.ack, len(answer.payload))

    base = dict(sport=sport, dport=port)
    # RST far out of window: ignored silently
    out["rst_out_of_window"] = describe(exchange(TCP(**base, flags="R", seq=our_seq + 10_000_000)))
    # RST inside the window but not at RCV.NXT: a challenge ACK
    out["rst_in_window"] = describe(exchange(TCP(**base, flags="R", seq=our_seq + 5)))
    # SYN on an established connection: a challenge ACK
    out["syn_established"] = describe(exchange(TCP(**base, flags="S", seq=our_seq + 100)))
    # data far outside the window: an ACK and a drop
    out["data_outside_window"] = describe(exchange(TCP(**base, flags="PA", seq=our_seq + 2**30, ack=their_seq)
                                                   / b"junk"))
    # data after a hole: held, and acknowledged at RCV.NXT at once
    out["after_hole"] = describe(exchange(TCP(**base, flags="PA", seq=our_seq + 5, ack=their_seq) / b"WORLD"))
    # the hole filled: everything acknowledged
    out["fill_hole"] = describe(exchange(TCP(**base, flags="PA", seq=our_seq, ack=their_seq) / b"HELLO"))
    out["our_seq"], out["their_seq"] = our_seq, their_seq
    # finally a reset exactly at RCV.NXT is accepted (and gets no answer)
    out["rst_exact"] = describe(exchange(TCP(**base, flags="R", seq=our_seq + 10)))
    return out


def test_crafted_segments(shared_stack):
    listener = libsock.create_server(("0.0.0.0", PORT))
    accepted = {}

    def serve():
        conn, peer = listener.accept()
        accepted["peer"] = peer
        conn.settimeout(15)
        data = b""
        try:
            while len(data) < 10:
                chunk = conn.recv(100)
                if not chunk:
                    break
                data += chunk
            accepted["data"] = data
            accepted["after"] = repr(conn.recv(100))
        except OSError as exc:
            accepted["after"] = type(exc).__name__
        conn.close()

    server = threading.Thread(target=serve)
    server.start()
    try:
        out = ns.in_netns(shared_stack.netns, _crafted_exchange, shared_stack.addr, PORT, timeout=60)
    finally:
        server.join(20)
        listener.close()
    assert out["syn_ack"] == "SA"
    rcv_nxt, snd_nxt = out["our_seq"], out["their_seq"]
    assert out["rst_out_of_window"] is None
    assert out["rst_in_window"] == ("A", snd_nxt, rcv_nxt, 0)        # challenge ACK
    assert out["syn_established"] == ("A", snd_nxt, rcv_nxt, 0)      # challenge ACK
    assert out["data_outside_window"] == ("A", snd_nxt, rcv_nxt, 0)
    assert out["after_hole"] == ("A", snd_nxt, rcv_nxt, 0)           # duplicate ACK for the hole
    assert out["fill_hole"] is not None and out["fill_hole"][2] == rcv_nxt + 10
    assert out["rst_exact"] is None
    assert accepted["peer"] == (SPOOF, 40123)
    assert accepted["data"] == b"HELLOWORLD"
    assert accepted["after"] == "ConnectionResetError"
