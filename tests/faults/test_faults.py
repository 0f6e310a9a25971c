"""The fault suite at full size (`make faults`): issue 6's five shows, with a report per
service and signal (see conftest.py)."""
from __future__ import annotations

import json

from tests.faults import scenarios

MiB = 1 << 20
BACK_WITHIN = 1.0          # each service answers again within 1 s of its kill


def _check(rows):
    for row in rows:
        assert row["back_s"] is None or row["back_s"] < BACK_WITHIN, row
        assert row["recovery_s"] < BACK_WITHIN, row
        assert row["bytes_lost"] in (0, None) and row["connections_reset"] == 0, row


def test_kill_each_service_three_times_during_100MiB_each_way(stack, fault_report):
    rows = scenarios.transfers_survive_kills(stack, 100 * MiB, rounds=3)
    fault_report.extend(rows)
    assert [row["service"] for row in rows] == list(scenarios.FAULT_SERVICES) * 3
    _check(rows)


def test_kills_during_requests_on_50_connections(stack, fault_report):
    rows = scenarios.requests_survive_kills(stack, 50, rounds=3)
    fault_report.extend(rows)
    assert len(rows) == 3 * len(scenarios.FAULT_SERVICES)
    _check(rows)


def test_kill_tcpd_five_times_during_100MiB_each_way(stack, fault_report):
    rows = scenarios.transfers_survive_kills(stack, 100 * MiB, services=("tcpd",), rounds=5)
    fault_report.extend(rows)
    assert len(rows) == 5
    _check(rows)


def test_kill_tcpd_under_blocked_calls(stack, fault_report):
    result = scenarios.tcpd_kill_keeps_blocked_calls(stack)
    print(json.dumps(result))
    fault_report.append(scenarios.tcpd_report_row(result))
    for call, (outcome, seconds) in result["outcomes"].items():
        assert outcome == "returned" and seconds < 1.5, (call, outcome, seconds)
    assert not result["stuck"]


def test_sigstop_ipd_3s_during_100MiB_each_way(stack, fault_report):
    rows = scenarios.transfers_survive_stop(stack, 100 * MiB, "ipd", seconds=3.0)
    fault_report.extend(rows)
    assert rows[0]["bytes_lost"] == 0 and rows[0]["connections_reset"] == 0


def test_sigstop_each_service_1s_during_transfers(stack, fault_report):
    rows = []
    for n, service in enumerate(("nicd", "tcpd", "timerd")):
        rows += scenarios.transfers_survive_stop(stack, 50 * MiB, service, seconds=1.0, port=7470 + 10 * n)
    fault_report.extend(rows)
    assert all(row["bytes_lost"] == 0 and row["connections_reset"] == 0 for row in rows), rows


def test_sigterm_each_service_during_transfers(stack, fault_report):
    rows = []
    transfers = scenarios.Transfers(stack, 50 * MiB, 7460, seconds=3.0)
    pinger = scenarios.Pinger(stack)
    try:
        scenarios.wait_for(lambda: transfers.progress() > 0, 20, 0.01, "the transfers to start")
        for service in scenarios.FAULT_SERVICES:
            rows.append({"scenario": "bulk", **scenarios.kill_and_measure(stack, service, pinger, "TERM")})
        outcome = transfers.finish()
    finally:
        pinger.close()
    for row in rows:
        row.update(outcome)
    fault_report.extend(rows)
    _check(rows)


def test_kill_supervisord_then_down_leaves_nothing(stack):
    result = scenarios.supervisord_killed_then_down(stack)
    print(json.dumps(result))
    assert result["left"] == []
    assert result["up_again"]
