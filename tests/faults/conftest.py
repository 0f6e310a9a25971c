"""The fault suite's report: every test adds its rows; at the end `make faults` prints them
as a table and writes them as JSON to $NETSTACK_FAULT_REPORT (default: fault-report.json
in pytest's temporary directory for the session)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.e2e.conftest import stack  # noqa: F401  (the fixture)
from tests.faults import scenarios

_rows: list[dict] = []
_where: list[Path] = []


@pytest.fixture(scope="session")
def fault_report(tmp_path_factory):
    path = Path(os.environ.get("NETSTACK_FAULT_REPORT") or tmp_path_factory.getbasetemp() / "fault-report.json")
    _where.append(path)
    return _rows


def pytest_terminal_summary(terminalreporter):
    if not _rows:
        return
    path = _where[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_rows, indent=1))
    terminalreporter.section("fault report: per service and signal")
    terminalreporter.write_line(scenarios.table(_rows))
    terminalreporter.write_line("")
    terminalreporter.write_line(scenarios.summary(_rows))
    terminalreporter.write_line(f"written as JSON to {path}")
