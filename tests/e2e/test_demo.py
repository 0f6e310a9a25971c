"""`netstack demo` (what `make demo` runs): exit 0, the ladder shown, nothing left behind."""
from __future__ import annotations

import os
import subprocess

from tests.e2e.conftest import NETSTACK


def test_demo_runs_and_leaves_nothing_behind():
    result = subprocess.run([NETSTACK, "demo"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    assert "Hello from netstack" in out                      # curl fetched the page
    assert "sha256 matches" in out                           # and the file
    for state in ("SYN_RCVD", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"):
        assert state in out                                  # the ladder, drawn in the terminal
    svg = next(line.split(": ", 1)[1].split(" ")[0] for line in out.splitlines() if ".svg" in line)
    assert open(svg).read().lstrip().startswith(("<?xml", "<svg"))
    assert "netstack-demo" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not os.path.exists("/run/netstack/demo")
