"""Issue 19's stress test at full size (make faults): 10,000 signals (SIGALRM and SIGINT) on
each module, every message whole and in order."""
from __future__ import annotations

import pytest

from tests.e2e.conftest import running_stack
from tests.e2e.test_signal_stress import run_stress


@pytest.mark.parametrize("module", ["socket", "libsock"])
def test_ten_thousand_signals_tear_nothing(module):
    with running_stack() as stack:
        run_stress(stack, module, 10_000)
