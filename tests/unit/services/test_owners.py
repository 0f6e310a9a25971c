"""tcpd's record of which processes hold each socket."""
import os
import subprocess

from services.tcp.owners import CLAIM_WITHIN, SWEEP_EVERY, Owners


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


def test_a_close_right_after_a_fork_waits_and_the_child_that_uses_the_socket_keeps_it():
    """A forking server: the parent accepts, forks, closes its copy; the child serves."""
    owners, parent, child = Owners(), b"p100.aa", b"p101.bb"
    owners.note(0.0, 7, parent)
    owners.promise(0.0, parent, [7, 99], "t")               # 99: not a socket of ours, ignored
    assert owners.next_sweep == CLAIM_WITHIN
    assert owners.hold_close(0.1, 7, parent)           # the parent's close waits ...
    owners.note(0.2, 7, child)                         # ... the child's first call takes the socket
    assert owners.closes_due(5.0) == []                # so the parent's close is done: its hold only
    assert owners._holders[7] == {101}
    assert not owners.hold_close(0.3, 7, child)        # the child's own close is a close


def test_a_held_close_happens_when_no_child_comes():
    owners, parent = Owners(), b"p100.aa"
    owners.note(0.0, 7, parent)
    owners.note(0.0, 8, parent)
    owners.promise(0.0, parent, [7, 8], "t")
    assert owners.hold_close(0.5, 7, parent)
    assert owners.closes_due(0.9) == []
    assert owners.closes_due(CLAIM_WITHIN) == [7]      # 8 was never closed: nothing to do
    assert not owners.hold_close(CLAIM_WITHIN + 0.1, 8, parent)    # the moment is over


def test_a_child_that_calls_before_the_parent_closes_or_even_before_the_fork_message_keeps_it():
    """The child's channel is not the parent's: its first call may overtake the parent's "fork"."""
    for child_first in (True, False):
        owners, parent, child = Owners(), b"p100.aa", b"p101.bb"
        owners.note(0.0, 7, parent)
        if child_first:
            owners.note(0.1, 7, child)
            owners.promise(0.0, parent, [7], "t")
        else:
            owners.promise(0.0, parent, [7], "t")
            owners.note(0.1, 7, child)
        assert owners.hold_close(0.2, 7, parent)       # stays open: the parent lets go of its hold
        assert owners._holders[7] == {101}
        assert owners.closes_due(5.0) == []


def test_only_a_child_forked_by_the_holder_with_the_fork_token_inherits(monkeypatch):
    """A process holds the sockets it made or was handed by fork: the child's `inherit` needs the
    token of the parent's `fork`, and the kernel's word that the parent forked it."""
    from services.tcp import owners as module
    parents = {101: 100, 102: 100, 103: 55}
    monkeypatch.setattr(module, "parent_of", parents.get)
    owners, parent = Owners(), b"p100.aa"
    owners.note(0.0, 7, parent)
    owners.note(0.0, 8, b"p200.cc")                    # another process's socket
    owners.promise(0.0, parent, [7, 8], "secret")      # 8 is not the parent's: not handed on
    assert not owners.claim(7, b"p101.bb")             # a child that has not inherited yet
    assert owners.inherit(0.1, b"p102.bb", "guess") == 0           # the wrong token
    assert owners.inherit(0.1, b"p103.bb", "secret") == 0          # the token, but not forked by 100
    assert owners.inherit(0.1, b"p101.bb", "secret") == 1
    assert owners.claim(7, b"p101.bb") and not owners.claim(8, b"p101.bb")
    assert not owners.claim(7, b"p102.bb") and owners.claim(7, parent)
    assert owners.claim(7, b"not-libsock")             # root's tools on the private endpoint
