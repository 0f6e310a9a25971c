"""Whether a process lives: for tcpd (the holders of its sockets) and for the
netstack command (supervisord and the services it started)."""
from __future__ import annotations

import os
from pathlib import Path


def parent_of(pid: int) -> int | None:
    """The parent of a live process (None if it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (dead, not yet reaped) is not alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):      # gone meanwhile: ENOENT, or ESRCH while it is reaped
        return False
