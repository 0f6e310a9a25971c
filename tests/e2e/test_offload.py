"""TCP segmentation and checksum offload through the virtio-net header (netstack up --offload)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import libsock
from tests.e2e import netns as ns
from tests.e2e import peers
from tests.e2e.conftest import connect_or_none, running_stack, wait_for

MiB = 1 << 20


@pytest.fixture(scope="module")
def offload_stack():
    with running_stack("--offload") as stack:
        yield stack


def test_super_segments_both_ways(offload_stack):
    size = 64 * MiB
    receiver = ns.KernelProcess(offload_stack.netns, peers.receive_file, offload_stack.host, 5101)
    data = peers.pattern(size)
    sock = wait_for(lambda: connect_or_none((offload_stack.host, 5101)), 10, 0.05, "the kernel receiver")
    with sock:
        sock.sendall(data)
    assert receiver.result(120) == (size, hashlib.sha256(data).hexdigest())

    with libsock.create_server(("0.0.0.0", 5102)) as server:
        sender = ns.KernelProcess(offload_stack.netns, peers.send_file, offload_stack.addr, 5102, size)
        conn, _ = server.accept()
        with conn:
            digest, total = hashlib.sha256(), 0
            while chunk := conn.recv(MiB):
                digest.update(chunk)
                total += len(chunk)
        assert (total, digest.hexdigest()) == (size, sender.result(120))

    stats = offload_stack.stats()
    wire_segments = 2 * size // 1460
    # far fewer segments crossed the device than the wire carried: they were super-segments
    assert stats["tcpd"]["out_segs"] < wire_segments / 8
    assert stats["nicd"]["rx_packets"] < wire_segments / 8
    assert stats["tcpd"].get("drop_bad_checksum", 0) == 0


def test_small_traffic_still_works(offload_stack):
    result = ns.run(offload_stack.netns, "ping", "-n", "-c", "3", "-i", "0.05", "-s", "3000",
                    offload_stack.addr, check=False)
    assert " 0% packet loss" in result.stdout


def test_offloads_are_on_by_default_and_off_on_request():
    """up probes the device: on by default (as here, where the kernel takes them), off when asked."""
    with running_stack() as default, running_stack("--offload", "off") as plain:
        for stack, expected in ((default, True), (plain, False)):
            config = json.loads((Path(stack.run_dir) / "config.json").read_text())
            assert config["instance"]["offload"] is expected
            link = ns.run(stack.netns, "ip", "-d", "link", "show", "tun0").stdout
            assert ("vnet_hdr on" in link) is expected, link
