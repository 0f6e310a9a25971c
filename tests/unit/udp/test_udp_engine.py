"""UDP's pure core: the port table, demultiplexing, receive buffers, ICMP errors both ways."""
from __future__ import annotations

import errno
import random

import pytest

from proto.udp.engine import (DATAGRAM_OVERHEAD, SO_BROADCAST, SO_ERROR, SO_RCVBUF, SO_REUSEADDR, SOL_SOCKET,
                              UdpConfig, UdpEngine, UdpError)
from proto.wire.ipv4 import build_ipv4, str_to_addr
from proto.wire.udp import build_udp, parse_udp

US, PEER, OTHER = str_to_addr("198.18.0.2"), str_to_addr("198.18.0.1"), str_to_addr("198.18.0.7")
ANY, LOOP = str_to_addr("0.0.0.0"), str_to_addr("127.0.0.1")


def engine(**overrides) -> UdpEngine:
    return UdpEngine(UdpConfig(address=US, **overrides), random.Random(7))


def sock(e: UdpEngine, sid: int, port: int | None = None, addr: bytes = ANY) -> int:
    e.open(sid)
    if port is not None:
        e.bind(sid, addr, port)
    return sid


def arrive(e: UdpEngine, payload: bytes, dst_port: int, src=PEER, src_port=5000, dst=US, **kw) -> None:
    e.datagram_in(src, dst, build_udp(src_port, dst_port, payload, src, dst), **kw)


def expect(code: int, call, *args):
    with pytest.raises(UdpError) as caught:
        call(*args)
    assert caught.value.errno == code


# ---- binding ------------------------------------------------------------------------------------

def test_bind_zero_takes_an_ephemeral_port_in_the_range():
    e = engine(ephemeral_ports=(40000, 40009))
    ports = set()
    for sid in range(10):
        sock(e, sid)
        ports.add(e.bind(sid, ANY, 0)[1])
    assert ports == set(range(40000, 40010))
    sock(e, 99)
    expect(errno.EAGAIN, e.bind, 99, ANY, 0)            # every ephemeral port taken


def test_a_port_is_held_once_unless_both_reuse_it():
    e = engine()
    sock(e, 1, 53)
    sock(e, 2)
    expect(errno.EADDRINUSE, e.bind, 2, US, 53)         # the wildcard covers every address
    e.bind(2, US, 54)
    expect(errno.EINVAL, e.bind, 2, US, 55)             # bound already
    for sid in (3, 4):
        sock(e, sid)
        e.setsockopt(sid, SOL_SOCKET, SO_REUSEADDR, 1)
        e.bind(sid, ANY, 60)
    e.close(1)
    sock(e, 5, 53)                                      # a closed socket's port is free at once


def test_only_local_addresses_bind():
    e = engine()
    sock(e, 1)
    expect(errno.EADDRNOTAVAIL, e.bind, 1, PEER, 53)
    e.bind(1, str_to_addr("127.0.0.5"), 53)


# ---- sending ------------------------------------------------------------------------------------

def test_sendto_autobinds_and_checksums():
    e = engine()
    sock(e, 1)
    sent, state = e.sendto(1, PEER, 53, b"query")
    assert sent == 5 and state[1] != 0
    [(src, dst, datagram)] = e.take_effects().datagrams
    assert (src, dst) == (US, PEER)
    assert parse_udp(datagram, src, dst) == (state[1], 53, b"query")     # the checksum verifies
    assert datagram[6:8] != b"\0\0"


def test_a_checksum_that_computes_to_zero_is_sent_as_all_ones():
    for port in range(1, 65536):            # find a datagram whose sum is 0xFFFF
        datagram = build_udp(port, 53, b"", US, PEER)
        if datagram[6:8] == b"\xff\xff":
            break
    else:
        pytest.fail("no such port")
    assert parse_udp(datagram, US, PEER) == (port, 53, b"")


def test_send_errors_are_linuxs():
    e = engine()
    sock(e, 1)
    expect(errno.EDESTADDRREQ, e.sendto, 1, None, 0, b"x")
    expect(errno.EACCES, e.sendto, 1, str_to_addr("255.255.255.255"), 9, b"x")
    expect(errno.EACCES, e.sendto, 1, str_to_addr("198.18.0.255"), 9, b"x")    # the subnet's broadcast
    e.setsockopt(1, SOL_SOCKET, SO_BROADCAST, 1)
    e.sendto(1, str_to_addr("255.255.255.255"), 9, b"x")
    expect(errno.EMSGSIZE, e.sendto, 1, PEER, 9, bytes(65508))
    e.sendto(1, PEER, 9, bytes(65507))
    expect(errno.EINVAL, e.sendto, 1, PEER, 0, b"x")


def test_source_follows_the_route_and_the_binding():
    e = engine()
    sock(e, 1)
    e.sendto(1, LOOP, 9, b"x")
    sock(e, 2, 0, LOOP)
    e.sendto(2, US, 9, b"x")
    expect(errno.EINVAL, e.sendto, 2, PEER, 9, b"x")    # a loopback source cannot leave the host
    assert [src for src, _, _ in e.take_effects().datagrams] == [LOOP, LOOP]


# ---- connecting ---------------------------------------------------------------------------------

def test_connect_fixes_the_peer_and_dissolves():
    e = engine()
    sock(e, 1)
    state = e.connect(1, PEER, 53)
    assert state[0] == US and state[2] == PEER and state[3] == 53 and state[1]
    e.sendto(1, None, 0, b"x")
    assert e.take_effects().datagrams[0][1] == PEER
    state = e.connect(1, None, 0)          # AF_UNSPEC
    assert state[:4] == [ANY, 0, None, 0]  # an implicit binding goes with the association
    expect(errno.EDESTADDRREQ, e.sendto, 1, None, 0, b"x")


def test_dissolving_keeps_an_explicit_binding():
    e = engine()
    sock(e, 1, 4000)
    e.connect(1, PEER, 53)
    assert e.connect(1, None, 0)[:2] == [ANY, 4000]


def test_a_connected_socket_takes_only_its_peers_datagrams():
    e = engine()
    sock(e, 1, 4000)
    e.connect(1, PEER, 53)
    arrive(e, b"stranger", 4000, src=OTHER, src_port=53)
    arrive(e, b"wrong port", 4000, src_port=54)
    arrive(e, b"peer", 4000, src_port=53)
    assert e.recv(1, 100)[2] == b"peer"
    expect(errno.EAGAIN, e.recv, 1, 100)
    assert e.counters["no_ports"] == 2


# ---- receiving ----------------------------------------------------------------------------------

def test_the_most_specific_socket_wins_and_later_binds_break_ties():
    e = engine()
    for sid in (1, 2, 3):
        sock(e, sid)
        e.setsockopt(sid, SOL_SOCKET, SO_REUSEADDR, 1)
    e.bind(1, ANY, 7)
    e.bind(2, US, 7)
    e.bind(3, ANY, 7)
    arrive(e, b"a", 7)
    assert e.recv(2, 10)[2] == b"a"                 # bound address beats wildcard
    e.close(2)
    arrive(e, b"b", 7)
    assert e.recv(3, 10)[2] == b"b"                 # the later of two equals
    assert e.effects.woken >= {2, 3}


def test_broadcasts_go_to_every_socket_on_the_port():
    e = engine()
    for sid in (1, 2):
        sock(e, sid)
        e.setsockopt(sid, SOL_SOCKET, SO_REUSEADDR, 1)
        e.bind(sid, ANY, 67)
    arrive(e, b"offer", 67, dst=str_to_addr("255.255.255.255"))
    assert e.recv(1, 10)[2] == e.recv(2, 10)[2] == b"offer"
    arrive(e, b"nobody", 68, dst=str_to_addr("198.18.0.255"))
    effects = e.take_effects()
    assert effects.unreachable == [] and e.counters["drop_broadcast_no_port"] == 1


def test_recv_cuts_to_bufsize_and_discards_the_rest_and_peek_keeps():
    e = engine()
    sock(e, 1, 9)
    arrive(e, b"0123456789", 9)
    arrive(e, b"second", 9)
    assert e.recv(1, 4, peek=True) == (PEER, 5000, b"0123", 10)
    assert e.recv(1, 4) == (PEER, 5000, b"0123", 10)
    assert e.recv(1, 100)[2] == b"second"          # the rest of the first is gone, as on Linux


def test_a_full_receive_buffer_drops_and_counts():
    e = engine()
    sock(e, 1, 9)
    e.setsockopt(1, SOL_SOCKET, SO_RCVBUF, 4096)     # reads back doubled, as Linux's
    assert e.getsockopt(1, SOL_SOCKET, SO_RCVBUF) == 8192
    for i in range(20):
        arrive(e, bytes(1000), 9)
    kept = 8192 // (1000 + DATAGRAM_OVERHEAD) + 1    # taken while the charge is within the buffer
    assert len(e.sockets[1].queue) == kept
    assert e.counters["rcvbuf_errors"] == e.sockets[1].drops == 20 - kept
    e.recv(1, 2000)
    arrive(e, b"room again", 9)
    assert e.counters["in_datagrams"] == kept + 1


def test_bad_datagrams_are_counted_and_dropped():
    e = engine()
    sock(e, 1, 9)
    good = build_udp(5000, 9, b"payload", PEER, US)
    e.datagram_in(PEER, US, good[:6] + b"\x12\x34" + good[8:])
    e.datagram_in(PEER, US, good[:5])
    e.datagram_in(PEER, US, good[:4] + b"\x00\x40" + good[6:])
    e.datagram_in(PEER, US, good[:6] + b"\0\0" + good[8:])        # zero: no checksum, accepted
    e.datagram_in(PEER, US, good[:6] + b"\x12\x34" + good[8:], verify=False)   # the device vouched
    assert e.counters["in_csum_errors"] == 1 and e.counters["drop_truncated"] == 1
    assert e.counters["drop_bad_length"] == 1 and e.counters["in_datagrams"] == 2


# ---- ICMP ---------------------------------------------------------------------------------------

def test_no_socket_asks_for_port_unreachable_quoting_the_datagram():
    e = engine()
    datagram = build_udp(5000, 9, b"hello there", PEER, US)
    header = build_ipv4(PEER, US, 17, datagram)[:20]
    e.datagram_in(PEER, US, datagram, ip_header=header)
    assert e.take_effects().unreachable == [header + datagram[:8]]
    assert e.counters["no_ports"] == 1


def test_port_unreachable_refuses_a_connected_socket_once():
    e = engine()
    sock(e, 1)
    e.connect(1, PEER, 9)
    port = e.sockets[1].local_port
    e.icmp_error_in(3, 3, US, PEER, port, 9)
    assert 1 in e.take_effects().woken
    expect(errno.ECONNREFUSED, e.sendto, 1, None, 0, b"x")
    e.sendto(1, None, 0, b"x")                            # reported once
    e.icmp_error_in(3, 3, US, PEER, port, 9)
    expect(errno.ECONNREFUSED, e.recv, 1, 10)
    e.icmp_error_in(3, 1, US, PEER, port, 9)
    assert e.getsockopt(1, SOL_SOCKET, SO_ERROR) == errno.EHOSTUNREACH
    assert e.getsockopt(1, SOL_SOCKET, SO_ERROR) == 0


def test_an_unconnected_socket_hears_no_icmp_error():
    e = engine()
    sock(e, 1, 4000)
    e.sendto(1, PEER, 9, b"x")
    e.icmp_error_in(3, 3, US, PEER, 4000, 9)
    expect(errno.EAGAIN, e.recv, 1, 10)
    assert e.counters["icmp_errors_unmatched"] == 1


def test_over_loopback_the_error_comes_straight_back():
    e = engine()
    sock(e, 1)
    e.connect(1, LOOP, 9)
    e.sendto(1, None, 0, b"x")
    [(src, dst, datagram)] = e.take_effects().datagrams
    e.datagram_in(src, dst, datagram, looped=True)
    assert e.take_effects().unreachable == []
    expect(errno.ECONNREFUSED, e.recv, 1, 10)


# ---- restart ------------------------------------------------------------------------------------

def test_a_socket_is_rebuilt_from_its_state():
    e = engine()
    sock(e, 1)
    e.setsockopt(1, SOL_SOCKET, SO_REUSEADDR, 1)
    e.bind(1, US, 4000)
    state = e.connect(1, PEER, 53)
    fresh = engine()
    assert fresh.open(1, state).state() == state
    arrive(fresh, b"again", 4000, src_port=53)
    assert fresh.recv(1, 10)[2] == b"again"
    expect(errno.ESTALE, fresh.recv, 2, 10)                 # a socket it never knew
    fresh.open(2)
    expect(errno.EADDRINUSE, fresh.open, 3, [US, 4000, None, 0, 3, [0, 0, 0, 212992, 212992]])


def test_a_posted_send_leaves_the_pending_error_for_the_next_call():
    e = engine()
    sock(e, 1)
    e.connect(1, PEER, 9)
    e.icmp_error_in(3, 3, US, PEER, e.sockets[1].local_port, 9)
    e.sendto(1, None, 0, b"posted", posted=True)          # nobody waits for its answer
    expect(errno.ECONNREFUSED, e.recv, 1, 10)


# ---- readiness ----------------------------------------------------------------------------------

def test_the_poll_mask_is_udp_polls():
    """Always writable; readable while a datagram waits, until the last one is taken; an ICMP
    error pending shows POLLERR (select: readable) until a call reports it; a closed socket shows
    everything (its watcher's next call learns EBADF)."""
    from proto.poll import POLLERR, POLLHUP, POLLIN, POLLOUT
    e = engine()
    port = e.bind(sock(e, 1), ANY, 0)[1]
    assert e.poll_mask(1) == POLLOUT
    arrive(e, b"a", port)
    arrive(e, b"b", port)
    assert e.take_effects().woken == {1}
    assert e.poll_mask(1) == POLLOUT | POLLIN
    e.recv(1, 10)
    assert e.poll_mask(1) == POLLOUT | POLLIN
    e.recv(1, 10, peek=True)
    e.recv(1, 10)
    assert e.poll_mask(1) == POLLOUT
    e.connect(1, PEER, 9)
    e.icmp_error_in(3, 3, US, PEER, port, 9)
    assert e.take_effects().woken == {1} and e.poll_mask(1) == POLLOUT | POLLERR
    expect(errno.ECONNREFUSED, e.recv, 1, 10)
    assert e.poll_mask(1) == POLLOUT
    e.close(1)
    assert e.poll_mask(1) == POLLIN | POLLOUT | POLLERR | POLLHUP
