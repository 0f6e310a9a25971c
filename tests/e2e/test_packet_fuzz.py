"""Mutated IPv4/ICMP/TCP packets at a running stack with a connection open (issue 15): valid
packets with fields mutated (checksums made right again, so they go deep), truncations, random
IP and TCP options, ICMP of every type, fragment sets with overlaps, gaps and duplicates.  They
come from the kernel's side of the TUN device (a packet socket on tun0 in the namespace), from
198.18.0.3 (an address the kernel does not own), so none belongs to the open connection: that
one must carry its data intact through it all.  No service raises, none restarts, the engine
survives no bug (drop_internal_error 0), and the drops are counted under their reasons."""
from __future__ import annotations

import random
import threading

import libsock
from tests.e2e import netns as ns
from tests.e2e.conftest import connect_or_none, log_tracebacks, running_stack, wait_for
from tests.e2e.peers import echo_server, pattern

PORT = 7600          # the kernel's echo server (the open connection)
LISTEN = 7601        # a listener of the stack's, for the crafted TCP to reach
SPOOF = "198.18.0.3"
COUNT = 20_000


def _mutated_packets(stack_addr: str, count: int, seed: int) -> int:
    import socket

    from proto.wire.checksum import internet_checksum, ones_complement_sum, pseudo_header_sum
    from proto.wire.icmp import build_echo_request, build_icmp
    from proto.wire.ipv4 import build_ipv4, str_to_addr
    from proto.wire.tcp import TcpFlags, TcpOptions, TcpSegment, build_tcp

    rng = random.Random(seed)
    src, dst = str_to_addr(SPOOF), str_to_addr(stack_addr)

    def fix_ip_checksum(p: bytearray) -> bytes:
        ihl = (p[0] & 0x0F) * 4
        if 20 <= ihl <= len(p):
            p[10:12] = b"\0\0"
            p[10:12] = internet_checksum(bytes(p[:ihl])).to_bytes(2, "big")
        return bytes(p)

    def tcp_segment() -> bytes:
        options = TcpOptions(mss=rng.choice([None, 0, 1, 536, 65535]), window_scale=rng.choice([None, 0, 14, 255]),
                             sack_permitted=rng.random() < 0.5,
                             timestamps=rng.choice([None, (rng.getrandbits(32), rng.getrandbits(32))]))
        seg = TcpSegment(rng.randrange(1, 65536), rng.choice([LISTEN, LISTEN, rng.randrange(65536)]),
                         rng.getrandbits(32), rng.getrandbits(32), TcpFlags(rng.randrange(256)),
                         rng.randrange(65536), rng.randrange(65536), options, rng.randbytes(rng.choice([0, 1, 100, 1400])))
        raw = bytearray(build_tcp(seg, src, dst))
        kind = rng.random()
        if kind < 0.3:                                 # random option bytes, data offset to match
            opts = rng.randbytes(rng.randrange(0, 41) // 4 * 4)
            raw = raw[:12] + bytes([(20 + len(opts)) // 4 << 4]) + raw[13:20] + opts + raw[raw[12] >> 4 << 2:]
        elif kind < 0.5:                               # a mutated header field
            raw[rng.randrange(20)] = rng.randrange(256)
        if rng.random() < 0.8:                         # checksum right again: it goes past the check
            raw[16:18] = b"\0\0"
            raw[16:18] = (~ones_complement_sum(bytes(raw), pseudo_header_sum(src, dst, 6, len(raw))) & 0xFFFF
                          ).to_bytes(2, "big")
        return bytes(raw)

    def icmp_message() -> bytes:
        if rng.random() < 0.3:
            return build_echo_request(rng.randrange(65536), rng.randrange(65536), rng.randbytes(rng.randrange(0, 2000)))
        return build_icmp(rng.randrange(256), rng.randrange(256), rng.getrandbits(32),
                          rng.randbytes(rng.randrange(0, 80)))

    def ip_packet() -> list[bytes]:
        proto = rng.choice([6, 6, 1, 17, rng.randrange(256)])
        payload = tcp_segment() if proto == 6 else icmp_message() if proto == 1 else rng.randbytes(rng.randrange(64))
        options = rng.randbytes(rng.choice([0, 0, 4, 8, 40])) if rng.random() < 0.2 else b""
        packet = bytearray(build_ipv4(src, dst, proto, payload, ttl=rng.choice([0, 1, 64, 255]),
                                      ident=rng.randrange(65536), df=rng.random() < 0.5, options=options))
        kind = rng.random()
        if kind < 0.25:                                # a mutated IP header field, checksum right again
            packet[rng.randrange(20)] = rng.randrange(256)
            return [fix_ip_checksum(packet)]
        if kind < 0.35:                                # truncated
            return [bytes(packet[:rng.randrange(len(packet))])]
        if kind < 0.55:                                # a fragment set: overlaps, gaps, duplicates, shuffled
            body = bytes(packet[20 + len(options):])
            ident = rng.randrange(65536)
            frags = []
            offset = 0
            while offset < len(body):
                size = rng.choice([8, 16, 64, 512])
                start = max(0, offset - rng.choice([0, 0, 8, 16]))           # overlap
                piece = body[start:start + size]
                last = start + size >= len(body)
                if rng.random() > 0.1:                                       # a gap now and then
                    frags.append(build_ipv4(src, dst, proto, piece, ident=ident, df=False, mf=not last,
                                            frag_offset=start))
                if rng.random() < 0.1:
                    frags.append(frags[-1] if frags else b"")                # a duplicate
                offset = start + size
            rng.shuffle(frags)
            return frags
        return [bytes(packet)]

    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
    sent = 0
    try:
        while sent < count:
            for packet in ip_packet():
                try:
                    sock.sendto(packet, ("tun0", 0x0800))
                except OSError:
                    pass
                sent += 1
    finally:
        sock.close()
    return sent


def test_mutated_packets_at_a_stack_with_a_connection_open():
    # room for every fragment held (the count below assumes none was evicted for memory)
    with running_stack(settings=["ip.reassembly_max_bytes=67108864"]) as stack:
        host = ns.KernelProcess(stack.netns, echo_server, stack.host, PORT)
        listener = libsock.create_server(("0.0.0.0", LISTEN), backlog=64)
        try:
            _check(stack)
        finally:
            listener.close()
            host.kill()


def _check(stack):
    conn = wait_for(lambda: connect_or_none((stack.host, PORT), timeout=5), 10, 0.1, "the echo server")
    conn.settimeout(30)
    before = stack.status()
    data = pattern(2_000_000, seed=15)
    got = bytearray()

    def echo_through():                       # the connection works while the packets come
        for i in range(0, len(data), 100_000):
            conn.sendall(data[i:i + 100_000])
            while len(got) < i + 100_000:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                got.extend(chunk)
    through = threading.Thread(target=echo_through)
    through.start()
    sent = ns.in_netns(stack.netns, _mutated_packets, stack.addr, COUNT, 15, timeout=120)
    through.join(60)
    assert not through.is_alive()
    assert bytes(got) == data                 # intact: not a byte of the fuzz got in
    conn.sendall(b"after")
    assert conn.recv(100) == b"after"
    conn.close()

    def counted():
        stats = stack.stats()
        return stats if stats["nicd"]["rx_packets"] >= sent * 0.8 else None
    stats = wait_for(counted, 30, 0.2, "nicd to read the packets")
    ipd, tcpd = stats["ipd"], stats["tcpd"]
    assert not log_tracebacks(stack.run_dir)
    after = stack.status()
    for service in ("nicd", "ipd", "tcpd", "timerd"):
        assert after[service]["state"] == "RUNNING"
        assert after[service]["incarnation"] == before[service]["incarnation"], f"{service} restarted"
        assert stats[service].get("handler_errors", 0) == 0, service
    assert tcpd["drop_internal_error"] == 0 and tcpd["timer_internal_error"] == 0
    for reason in ("drop_truncated", "drop_bad_version", "drop_reasm_overlap", "drop_reasm_duplicate",
                   "drop_unknown_protocol", "drop_icmp_malformed"):
        assert ipd[reason] > 0, (reason, ipd)
    # every packet ipd took is delivered, dropped under a reason, or a fragment held for reassembly
    # (those that completed a datagram are delivered with it)
    drops = sum(v for k, v in ipd.items() if k.startswith("drop_") and k not in ("drop_reasm_timeout",
                                                                                  "drop_reasm_memory"))
    held = ipd["reasm_reqds"] - ipd["drop_reasm_duplicate"] - ipd["drop_reasm_overlap"] - ipd["drop_reasm_malformed"]
    assert ipd["in_receives"] == ipd["in_delivers"] + drops + ipd["not_ipv4"] + held - ipd["reasm_oks"], ipd
    assert ipd["reasm_oks"] > 0 and ipd["echo_replies"] > 0
    for reason in ("drop_bad_checksum", "drop_bad_option", "drop_no_socket", "drop_listen_ack"):
        assert tcpd[reason] > 0, (reason, tcpd)
    with libsock.create_connection((stack.host, PORT), timeout=10) as again:
        again.sendall(b"new")
        assert again.recv(100) == b"new"
