"""netstack bench --quick: every workload runs on the stack and on a baseline in one command,
and the figures come out as JSON (median, min, max) and as a table.  Figures are checked
for sense, never against a time: the machine is shared."""
from __future__ import annotations

import json
import os

from tests.e2e.conftest import netstack

FIGURES = {"bulk_in_MBps", "bulk_out_MBps", "rr_p50_us", "rr_p99_us", "conn_rate_first_per_s",
           "conn_rate_last_per_s", "asyncio_rr_p50_us", "asyncio_rr_p99_us", "asyncio_server_conn_per_s",
           "udp_rr_p50_us", "udp_rr_p99_us", "udp_asyncio_rr_p50_us", "udp_asyncio_rr_p99_us",
           *(f"udp_{way}_{size}_{what}" for way in ("in", "out") for size in (64, 1472)
             for what in ("dps", "loss_pct"))}
FIGURES |= {f"http_{role}_{p}_us" for role in ("client", "server") for p in ("p50", "p99")}
LOSS = {f"loss1_{way}_{what}" for way in ("in", "out") for what in ("MBps", "retrans_per_MiB", "rto_per_MiB")}
WATCHED = {"bulk_in_watched_MBps", "bulk_out_watched_MBps"}      # the stack's readiness tracking's cost


def test_bench_quick_json_beside_a_kernel_baseline():
    name = f"t{os.getpid() % 100000}bench"
    try:
        result = netstack("bench", "--quick", "--json", "--targets", "netstack,veth", "--name", name, timeout=600)
    finally:
        netstack("down", "--name", name, check=False)
    report = json.loads(result.stdout)
    assert report["quick"] is True and report["trials"] == 1 and report["mtu"] == 1500
    assert set(report["targets"]) == {"netstack", "veth"}
    for target, figures in report["targets"].items():
        assert set(figures) == FIGURES | LOSS | (WATCHED if target == "netstack" else set()), target
        for figure, spread in figures.items():
            zero_ok = figure.endswith(("loss_pct", "rto_per_MiB"))                            # nothing lost: 0
            low = 0 <= spread["min"] if zero_ok else 0 < spread["min"]
            assert low and spread["min"] <= spread["median"] <= spread["max"], (target, figure, spread)
            if figure.endswith("loss_pct"):
                assert spread["max"] <= 100, (target, figure, spread)
        assert figures["rr_p50_us"]["median"] <= figures["rr_p99_us"]["median"]
        assert figures["asyncio_rr_p50_us"]["median"] <= figures["asyncio_rr_p99_us"]["median"]
        assert figures["udp_rr_p50_us"]["median"] <= figures["udp_rr_p99_us"]["median"]
        assert figures["udp_asyncio_rr_p50_us"]["median"] <= figures["udp_asyncio_rr_p99_us"]["median"]
        assert figures["http_client_p50_us"]["median"] <= figures["http_client_p99_us"]["median"]
        assert figures["loss1_out_retrans_per_MiB"]["min"] > 0 and figures["loss1_in_retrans_per_MiB"]["min"] > 0
    scale = report["scale"]
    assert scale["connections_held"] == scale["concurrent_connections"] == 1000
    assert 0 < scale["tcpd_kib_per_connection"] < 64
    assert set(scale["idle_cpu_percent"]) == {"nicd", "ipd", "tcpd", "timerd", "udpd"}


def test_bench_prints_a_table_with_the_transport_floor():
    """The table has a row per figure and a column per target; the ZeroMQ chain (the floor of the
    stack's transport) has only the request/response figures, and its p50 is a real measurement."""
    result = netstack("bench", "--quick", "--targets", "veth,zmq-chain", "--name", f"t{os.getpid() % 100000}bt",
                      timeout=300)
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("figure"))
    assert lines[header].split() == ["figure", "veth", "zmq-chain"]
    labels = ["bulk kernel -> side (MB/s)", "bulk side -> kernel (MB/s)", "1-byte req/resp p50 (us)",
              "1-byte req/resp p99 (us)", "asyncio req/resp p50 (us)", "asyncio req/resp p99 (us)",
              "asyncio server conn/s", "bulk in, fileno() watched", "bulk out, fileno() watched", "conn/s, first 1000", "conn/s, last 1000"]
    rows = lines[header + 1:header + 1 + len(labels)]
    assert [row[:34].strip() for row in rows] == labels
    chain = [row.split()[-1] for row in rows]       # the last column: "-" or "[min-max]"
    assert {chain[i] for i in (0, 1, 4, 5, 6, 7, 8, 9, 10)} == {"-"}
    p50 = int(rows[2][34:].split()[-2])
    assert p50 > 0 and rows[3].split()[-1] != "-"


def test_an_unknown_target_is_refused_in_one_line_before_anything_runs():
    result = netstack("bench", "--targets", "veth,kernel9", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no target kernel9" in result.stderr and "zmq-chain" in result.stderr
    assert result.stdout == ""
