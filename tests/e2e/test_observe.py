"""Looking inside a running stack: netstack pcap, trace (and its ladder), impair."""
from __future__ import annotations

import re
import socket as std_socket
import subprocess
import threading
import time
import xml.etree.ElementTree as ET

import pytest

import libsock
from tests.e2e import netns as ns
from tests.e2e.conftest import NETSTACK, connect_or_none, interrupt, start_cli, wait_for

PORT = 7101
CLIENT_STATES = ["SYN_SENT", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT"]
SERVER_STATES = ["SYN_RCVD", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]
ALL_STATES = {"CLOSED", "LISTEN", "SYN_SENT", "SYN_RCVD", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSING",
              "TIME_WAIT", "CLOSE_WAIT", "LAST_ACK"}
SVG = "{http://www.w3.org/2000/svg}"


def kernel_client(host: str, port: int) -> bytes:
    """The seed's client: connect, one exchange, close first."""
    with std_socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(b"hello")
        answer = sock.recv(100)
    return answer


def libsock_server(server, results: list) -> None:
    """The seed's server: answer, read the client's FIN, wait, then close (the
    pause lets its ACK of the FIN go on its own, as in the figure)."""
    conn, _ = server.accept()
    with conn:
        conn.sendall(conn.recv(100).upper())
        while conn.recv(100):
            pass
        time.sleep(0.15)
    results.append("closed")


def svg_states(path) -> tuple[list[str], list[str]]:
    """The state badges of a ladder SVG, top to bottom, for the left and the right line."""
    root = ET.parse(path).getroot()
    width = float(root.get("width"))
    left, right = [], []
    for text in root.iter(SVG + "text"):
        if text.text in ALL_STATES:
            (left if float(text.get("x")) < width / 2 else right).append((float(text.get("y")), text.text))
    return [s for _, s in sorted(left)], [s for _, s in sorted(right)]


def assert_contains_run(states: list[str], expected: list[str]) -> None:
    n = len(expected)
    assert any(states[i:i + n] == expected for i in range(len(states) - n + 1)), (states, expected)


@pytest.fixture(scope="module")
def observed(shared_stack, tmp_path_factory):
    """One connection of the seed's shape, captured by `netstack pcap` and traced
    by `netstack trace` at the same time."""
    folder = tmp_path_factory.mktemp("observe")
    capture, ladder = folder / "conn.pcap", folder / "live.svg"
    pcap_cli = start_cli(shared_stack, "pcap", str(capture))
    trace_cli = start_cli(shared_stack, "trace", "--ladder", str(ladder), "--conn", f":{PORT}")
    try:
        results: list = []
        with libsock.create_server(("0.0.0.0", PORT)) as server:
            thread = threading.Thread(target=libsock_server, args=(server, results), daemon=True)
            thread.start()
            assert ns.in_netns(shared_stack.netns, kernel_client, shared_stack.addr, PORT, timeout=10) == b"HELLO"
            thread.join(5)
        assert results == ["closed"]
        # the stack's side is gone once the client's last ACK has arrived
        wait_for(lambda: not [s for s in shared_stack.ss() if s.get("local") and s["local"][1] == PORT
                              and s.get("state") != "LISTEN"], 5, 0.02, "the server's side to close")
        pcap_out, _ = interrupt(pcap_cli)
        trace_out, _ = interrupt(trace_cli)
    finally:
        for proc in (pcap_cli, trace_cli):
            if proc.poll() is None:
                proc.kill()
    return {"capture": capture, "ladder": ladder, "pcap_out": pcap_out, "trace_out": trace_out,
            "folder": folder, "stack": shared_stack}


def test_pcap_reads_back_with_tcpdump(observed):
    count = int(re.search(r"(\d+) packets written", observed["pcap_out"]).group(1))
    result = subprocess.run(["tcpdump", "-n", "-r", str(observed["capture"]), f"tcp port {PORT}"],
                            capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    assert "link-type RAW" in result.stderr
    lines = result.stdout.splitlines()
    assert 9 <= len(lines) <= count
    flags = [re.search(r"Flags \[([^\]]*)\]", line).group(1) for line in lines]
    assert flags[:3] == ["S", "S.", "."]                      # the handshake
    assert "P." in flags                                      # the data
    assert flags.count("F.") == 2                             # both FINs
    assert any("length 5" in line for line in lines)


def test_pcap_has_no_bad_checksums(observed):
    result = subprocess.run(["tcpdump", "-n", "-vv", "-r", str(observed["capture"])],
                            capture_output=True, text=True, timeout=10)
    assert result.returncode == 0
    assert "cksum" in result.stdout and "correct" in result.stdout
    assert "incorrect" not in result.stdout and "bad cksum" not in result.stdout


def test_ladder_from_the_live_trace(observed):
    text = observed["trace_out"]
    assert "LISTEN -> SYN_RCVD" in text and "LAST_ACK -> CLOSED" in text       # the stream
    assert re.search(r"<- \S+ +SYN seq 0 ", text)
    left, right = svg_states(observed["ladder"])
    assert_contains_run(left, CLIENT_STATES)
    assert_contains_run(right, SERVER_STATES)
    assert "states of 198.18.0.2:7101 from tcpd's transitions" in observed["ladder"].read_text()


def test_ladder_from_the_capture(observed):
    ladder = observed["folder"] / "from-pcap.svg"
    result = subprocess.run([NETSTACK, "trace", "--pcap", str(observed["capture"]), "--ladder", str(ladder),
                             "--conn", f"198.18.0.2:{PORT}"], capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    left, right = svg_states(ladder)
    assert left == ["CLOSED"] + CLIENT_STATES
    assert right == ["LISTEN"] + SERVER_STATES
    assert "SYN_SENT |" in result.stdout and "| CLOSED" in result.stdout        # the text version


def test_pcap_stops_after_count(shared_stack, tmp_path):
    capture = tmp_path / "four.pcap"
    proc = start_cli(shared_stack, "pcap", str(capture), "--count", "4")
    ns.run(shared_stack.netns, "ping", "-c", "3", "-i", "0.05", shared_stack.addr, timeout=10)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "4 packets written" in out
    result = subprocess.run(["tcpdump", "-n", "-r", str(capture)], capture_output=True, text=True, timeout=10)
    assert len(result.stdout.splitlines()) == 4
    assert "ICMP echo request" in result.stdout and "ICMP echo reply" in result.stdout


def _ping(stack, count: int, *extra: str) -> tuple[float, str]:
    result = ns.run(stack.netns, "ping", "-n", "-c", str(count), "-i", "0.002", "-W", "1", *extra, stack.addr,
                    timeout=30, check=False)
    loss = float(re.search(r"([\d.]+)% packet loss", result.stdout).group(1))
    return loss, result.stdout


def test_impair_loss_in_drops_about_half_and_off_restores(shared_stack):
    before = shared_stack.stats()["nicd"]["impair_dropped"]
    try:
        out = shared_stack.cli("impair", "--loss", "0.5", "--direction", "in", "--seed", "7").stdout
        assert "loss 0.5 (in)" in out
        loss, _ = _ping(shared_stack, 200)
        assert 30 <= loss <= 70
        dropped = shared_stack.stats()["nicd"]["impair_dropped"] - before
        assert 60 <= dropped <= 140
    finally:
        out = shared_stack.cli("impair", "--off").stdout
    assert "impairment: off" in out
    loss, _ = _ping(shared_stack, 100)
    assert loss == 0.0


def test_impair_delay_and_duplicate_out(shared_stack):
    try:
        shared_stack.cli("impair", "--delay", "40", "--duplicate", "1", "--direction", "out")
        _, out = _ping(shared_stack, 5, "-i", "0.05")
        rtts = [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]
        assert rtts and min(rtts) >= 40
        assert "DUP!" in out
        shown = shared_stack.cli("impair").stdout
        assert "delay 40 ms" in shown and "duplicate 1 (out)" in shown
    finally:
        shared_stack.cli("impair", "--off")
    assert shared_stack.stats()["nicd"]["impair_duplicated"] >= 5


def test_errors_are_one_line(shared_stack, tmp_path):
    result = shared_stack.cli("impair", "--loss", "2", check=False)
    assert result.returncode == 1 and "probability" in result.stderr and "Traceback" not in result.stderr
    result = shared_stack.cli("trace", "--pcap", str(tmp_path / "missing.pcap"), check=False)
    assert result.returncode == 1 and "cannot read" in result.stderr
    result = shared_stack.cli("pcap", "/nonexistent-dir/x.pcap", check=False)
    assert result.returncode == 1 and "no such directory" in result.stderr


def test_stats_count_packets_and_bytes_in_and_out_at_every_layer(shared_stack):
    """`netstack stats`: per layer, packets and bytes in and out (here: a 100 kB exchange)."""
    before = shared_stack.stats()
    server = ns.KernelProcess(shared_stack.netns, _count_until_eof, shared_stack.host, PORT + 5)
    sock = wait_for(lambda: connect_or_none((shared_stack.host, PORT + 5), timeout=5), 10, 0.05, "the server")
    with sock:
        sock.sendall(b"s" * 100_000)
        sock.shutdown(libsock.SHUT_WR)
        assert len(sock.recv(16)) == 8
    server.result(10)
    after = shared_stack.stats()
    grown = {layer: {key for key, value in after[layer].items()
                     if isinstance(value, int) and value > before[layer].get(key, 0)} for layer in after}
    assert {"rx_packets", "rx_bytes", "tx_packets", "tx_bytes"} <= grown["nicd"]
    assert {"in_receives", "in_bytes", "out_packets", "out_bytes"} <= grown["ipd"]
    assert {"in_segs", "in_bytes", "out_segs", "out_bytes"} <= grown["tcpd"]
    assert after["tcpd"]["out_bytes"] - before["tcpd"]["out_bytes"] > 100_000     # headers included


def _count_until_eof(host: str, port: int) -> None:
    """Kernel side: read to EOF, answer with the count as 8 bytes."""
    with std_socket.create_server((host, port)) as listener:
        conn, _ = listener.accept()
        with conn:
            total = 0
            while data := conn.recv(1 << 16):
                total += len(data)
            conn.sendall(total.to_bytes(8, "big"))
