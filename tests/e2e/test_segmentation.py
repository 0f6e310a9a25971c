"""Segmentation and coalescing in software, at MTU 1500 without device offloads:
tcpd sends super-segments that nicd cuts into wire packets (GSO), and ipd merges
the kernel's in-order segments before tcpd sees them (GRO)."""
from __future__ import annotations

import hashlib

import pytest

import libsock
from proto.wire import pcap
from proto.wire.ipv4 import parse_ipv4
from proto.wire.tcp import parse_tcp
from tests.e2e import netns as ns
from tests.e2e import peers
from tests.e2e.conftest import connect_or_none, interrupt, running_stack, start_cli, wait_for

MiB = 1 << 20


@pytest.fixture(scope="module")
def plain_stack():
    """Offloads off (they are on by default): nicd cuts, ipd merges."""
    with running_stack("--offload", "off") as stack:
        yield stack


def _stat(stack, service: str, name: str) -> int:
    return stack.stats()[service][name]


def test_super_segments_leave_as_valid_mtu_sized_packets(plain_stack, tmp_path):
    capture = tmp_path / "out.pcap"
    pcap_cli = start_cli(plain_stack, "pcap", str(capture))
    try:
        cut_before = _stat(plain_stack, "nicd", "gso_packets")
        receiver = ns.KernelProcess(plain_stack.netns, peers.receive_file, plain_stack.host, 5301)
        data = peers.pattern(2 * MiB, seed=8)
        sock = wait_for(lambda: connect_or_none((plain_stack.host, 5301), timeout=5), 10, 0.05, "the kernel")
        with sock:
            sock.sendall(data)
        assert receiver.result(60) == (2 * MiB, hashlib.sha256(data).hexdigest())
        interrupt(pcap_cli)
    finally:
        if pcap_cli.poll() is None:
            pcap_cli.kill()
    assert _stat(plain_stack, "nicd", "gso_packets") > cut_before
    ours = [packet for _, packet in pcap.ip_packets(capture.read_bytes()) if packet[12:16] == bytes([198, 18, 0, 2])]
    payload = 0
    for packet in ours:
        assert len(packet) <= 1500
        header, body = parse_ipv4(packet)                  # IP checksum checked
        payload += len(parse_tcp(body, header.src, header.dst).payload)    # TCP checksum checked
    assert payload >= 2 * MiB


def test_in_order_segments_reach_tcpd_merged(plain_stack):
    merged_before = _stat(plain_stack, "ipd", "gro_merged")
    segments_before = _stat(plain_stack, "tcpd", "in_segs")
    packets_before = _stat(plain_stack, "ipd", "in_delivers")
    with libsock.create_server(("0.0.0.0", 5302)) as server:
        sender = ns.KernelProcess(plain_stack.netns, peers.send_file, plain_stack.addr, 5302, 8 * MiB)
        conn, _ = server.accept()
        digest, total = hashlib.sha256(), 0
        with conn:
            while chunk := conn.recv(MiB):
                digest.update(chunk)
                total += len(chunk)
    assert (total, digest.hexdigest()) == (8 * MiB, sender.result(60))
    merged = _stat(plain_stack, "ipd", "gro_merged") - merged_before
    packets = _stat(plain_stack, "ipd", "in_delivers") - packets_before
    segments = _stat(plain_stack, "tcpd", "in_segs") - segments_before
    assert merged > 0 and segments == packets - merged and segments < packets / 2
