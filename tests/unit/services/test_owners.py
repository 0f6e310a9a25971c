"""tcpd's record of which processes hold each socket."""
import os
import subprocess

from services.tcp.owners import SWEEP_EVERY, Owners


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_socket_is_an_orphan_once_every_holder_died():
    owners, me, dead = Owners(), os.getpid(), _dead_pid()
    owners.note(0.0, 1, f"p{dead}.aa".encode())
    owners.note(0.0, 2, f"p{dead}.aa".encode())
    owners.note(0.0, 2, f"p{me}.bb".encode())            # also held by a live process
    owners.note(0.0, 3, f"p{me}.bb".encode())
    assert owners.next_sweep == SWEEP_EVERY
    assert owners.orphans(SWEEP_EVERY) == [1]
    assert len(owners) == 2 and owners.next_sweep == 2 * SWEEP_EVERY
    assert owners.orphans(2 * SWEEP_EVERY) == []         # the live holder keeps 2 open


def test_closed_sockets_and_foreign_callers_are_not_tracked():
    owners = Owners()
    owners.note(0.0, 1, b"netstack-cli")                 # not a libsock channel: nobody to watch
    assert len(owners) == 0 and owners.next_sweep is None
    owners.note(0.0, 2, f"p{_dead_pid()}.cc".encode())
    owners.forget(2)
    assert owners.orphans(1.0) == [] and owners.next_sweep is None
