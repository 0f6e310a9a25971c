"""deploy/instance.py's run_supervisord wraps two internals of supervisord (Supervisor.runforever
and Supervisor.reap) and calls a third (ProcessGroup.transition), to restart a dead service at
once (supervisord has no supported setting for it).  The version is pinned in pyproject.toml;
this test fails when the wrapped code changes, so an upgrade is a decision, not an accident."""
from __future__ import annotations

import hashlib
import inspect

from supervisor import process
from supervisor import supervisord as sd
from supervisor.medusa import asyncore_25

# sha256 of each function's source in supervisor 4.3.0 (the first 16 hex digits)
PATCHED = {
    sd.Supervisor.runforever: "4f57d6e10b139a2a",
    sd.Supervisor.reap: "673bb1ec6cd348d9",
    process.ProcessGroup.transition: "b7dbf9c80ec6184a",
}


def test_the_wrapped_internals_are_the_ones_the_patch_was_written_for():
    for function, digest in PATCHED.items():
        source = inspect.getsource(function)
        assert hashlib.sha256(source.encode()).hexdigest()[:16] == digest, (
            f"{function.__qualname__} changed: re-read deploy/instance.py's run_supervisord")


def test_the_signatures_the_patch_calls():
    assert list(inspect.signature(sd.Supervisor.reap).parameters) == ["self", "once", "recursionguard"]
    assert list(inspect.signature(sd.Supervisor.runforever).parameters) == ["self"]
    assert isinstance(asyncore_25.socket_map, dict) and callable(sd.main)
