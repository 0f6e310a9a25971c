"""Issue 19's stress test at full size (make faults): 10,000 signals on each module, every
message whole and in order.  libsock still lets a message out of order now and then (a known
bug, issue 19's note): marked as expected to fail there until it is found, not hidden."""
from __future__ import annotations

import pytest

from tests.e2e.conftest import running_stack
from tests.e2e.test_signal_stress import run_stress


@pytest.mark.parametrize("module", [
    "socket",
    pytest.param("libsock", marks=pytest.mark.xfail(reason="a message now and then out of order", strict=False)),
])
def test_ten_thousand_signals_tear_nothing(module):
    with running_stack() as stack:
        run_stress(stack, module, 10_000)
