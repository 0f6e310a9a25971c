"""Issue 6, briefly: kills under load lose nothing; a tcpd kill resets promptly."""
from __future__ import annotations

from tests.faults import scenarios

MiB = 1 << 20


def test_kills_during_transfers_lose_nothing(stack):
    report = scenarios.transfers_survive_kills(stack, 20 * MiB)
    for row in report:
        assert row["recovery_s"] < 1.5, row
        assert row["bytes_lost"] == 0


def test_tcpd_kill_ends_blocked_calls(stack):
    result = scenarios.tcpd_kill_resets_promptly(stack)
    for call, (outcome, seconds) in result["outcomes"].items():
        assert outcome == "ConnectionResetError", (call, outcome)
        assert seconds < 1.0, (call, seconds)
    assert result["new_connection_s"] < 2.0
