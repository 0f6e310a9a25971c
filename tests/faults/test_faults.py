"""The fault suite at full size (`make faults`): prints a report per service and signal."""
from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import stack  # noqa: F401  (the fixture)
from tests.faults import scenarios

MiB = 1 << 20


def test_kill_nicd_ipd_timerd_three_times_during_100MiB_each_way(stack, capsys):
    report = scenarios.transfers_survive_kills(stack, 100 * MiB, rounds=3)
    with capsys.disabled():
        print("\nservice  signal  recovery_s  bytes_lost  connections_reset")
        for row in report:
            print(f"{row['service']:8} {row['signal']:6} {row['recovery_s']:10.3f} {row['bytes_lost']:11} "
                  f"{row['connections_reset']:18}")
    assert all(row["recovery_s"] < 1.5 and row["bytes_lost"] == 0 for row in report)


def test_kill_tcpd(stack, capsys):
    result = scenarios.tcpd_kill_resets_promptly(stack)
    with capsys.disabled():
        print("\n" + json.dumps(result))
    assert all(outcome == "ConnectionResetError" and seconds < 1.0
               for outcome, seconds in result["outcomes"].values())
