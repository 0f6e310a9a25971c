"""tcpd's readiness bookkeeping (services/readiness.py) and libsock's mirror descriptor
(libsock/_readiness.py): what is told, when, and what the descriptor then shows."""
from __future__ import annotations

import select

from libsock._readiness import Mirror
from services.readiness import POLLERR, POLLHUP, POLLIN, POLLOUT, Readiness

masks: dict[int, int] = {}


def mask_of(sid: int) -> int:
    return masks[sid]


def test_a_reply_stamps_only_for_a_watching_process():
    r = Readiness()
    masks[1] = POLLOUT
    assert r.stamp(1, 100, mask_of) is None                 # nobody watches
    r.watch(1, 100, b"n100.x", 0)
    assert r.stamp(1, 200, mask_of) is None                 # another process does not
    assert r.stamp(1, 100, mask_of) == [2, POLLOUT]
    assert r.stamp(1, 100, mask_of) == [3, POLLOUT]         # versions count up per (socket, process)


def test_only_gains_travel_and_only_once():
    r = Readiness()
    masks[1] = POLLOUT
    r.watch(1, 100, b"chan", 0)
    r.stamp(1, 100, mask_of)                                 # told: writable
    assert r.gained([1], mask_of) == {}                      # nothing new
    masks[1] = POLLOUT | POLLIN                              # data arrived
    assert r.gained([1], mask_of) == {b"chan": [[1, 3, POLLOUT | POLLIN]]}
    assert r.gained([1], mask_of) == {}                      # more segments: no message each
    masks[1] = POLLOUT                                       # a loss is not told unasked...
    assert r.gained([1], mask_of) == {}
    assert r.stamp(1, 100, mask_of) == [4, POLLOUT]          # ...but by the next reply
    masks[1] = POLLOUT | POLLIN
    assert r.gained([1], mask_of) == {b"chan": [[1, 5, POLLOUT | POLLIN]]}


def test_gains_are_grouped_per_channel_and_forgotten_with_the_socket():
    r = Readiness()
    for sid in (1, 2, 3):
        masks[sid] = 0
        r.watch(sid, 100 if sid < 3 else 200, b"a" if sid < 3 else b"b", 0)
        masks[sid] = POLLIN
    out = r.gained([1, 2, 3, 4], mask_of)
    assert sorted(out) == [b"a", b"b"] and len(out[b"a"]) == 2 and len(out[b"b"]) == 1
    r.forget(1)
    masks[1] = POLLIN | POLLOUT
    assert 1 not in r and r.gained([1], mask_of) == {}


def test_a_hello_retells_what_its_channel_watches():
    """udpd tells every socket watched through a channel again when the channel says hello (a
    gain it sent while the channel was reconnecting after a restart was dropped): with a newer
    version, so it applies."""
    r = Readiness(epoch=3)
    for sid in (1, 2, 3):
        masks[sid] = POLLOUT
        r.watch(sid, 100 if sid < 3 else 200, b"a" if sid < 3 else b"b", 0)
    masks[1] = POLLOUT | POLLIN
    assert r.gained([1], mask_of) == {b"a": [[1, (3 << 40) + 2, POLLOUT | POLLIN]]}     # (say it was lost)
    assert sorted(r.retell(b"a", mask_of)) == [[1, (3 << 40) + 3, POLLOUT | POLLIN], [2, (3 << 40) + 2, POLLOUT]]
    assert r.retell(b"c", mask_of) == []


def test_a_renewed_mirror_takes_the_next_version_whatever_it_is():
    """A socket restored in a udpd of another instance (netstack down and up) counts from a lower
    epoch: the mirror is renewed at the watch and takes it."""
    m = Mirror()
    try:
        m.apply(5 << 40, POLLIN | POLLOUT)
        m.apply(1 << 40, POLLOUT)
        assert _shown(m.fd) == (True, True)             # older: ignored
        m.renew()
        m.apply(1 << 40, POLLOUT)
        assert _shown(m.fd) == (False, True)
    finally:
        m.close()


def _shown(fd: int) -> tuple[bool, bool]:
    readable, writable, _ = select.select([fd], [fd], [], 0)
    return bool(readable), bool(writable)


def test_mirror_shows_all_four_states_and_hup_err_as_select_does():
    m = Mirror("inc")
    try:
        assert _shown(m.fd) == (False, False)                # a connecting socket: neither
        m.apply(1, POLLOUT)
        assert _shown(m.fd) == (False, True)
        m.apply(2, POLLIN | POLLOUT)
        assert _shown(m.fd) == (True, True)
        m.apply(3, POLLIN)
        assert _shown(m.fd) == (True, False)
        m.apply(4, POLLERR)                                  # select's read and write sets
        assert _shown(m.fd) == (True, True)
        m.apply(5, POLLHUP)                                  # select's read set
        assert _shown(m.fd) == (True, False)
        m.apply(6, 0)
        assert _shown(m.fd) == (False, False)
    finally:
        m.close()


def test_mirror_ignores_an_older_version():
    m = Mirror("inc")
    try:
        m.apply(5, POLLIN)
        m.apply(4, POLLOUT)                                  # crossed on the other channel: stale
        assert _shown(m.fd) == (True, False)
    finally:
        m.close()


def test_mirror_edges_reach_edge_triggered_epoll():
    m = Mirror("inc")
    ep = select.epoll()
    try:
        ep.register(m.fd, select.EPOLLIN | select.EPOLLOUT | select.EPOLLET)
        assert ep.poll(0) == []
        m.apply(1, POLLIN)
        assert ep.poll(0) == [(m.fd, select.EPOLLIN)]
        assert ep.poll(0) == []                              # one edge
        m.apply(2, 0)
        m.apply(3, POLLOUT)
        assert ep.poll(0) == [(m.fd, select.EPOLLOUT)]
    finally:
        ep.close()
        m.close()


def test_what_libsock_holds_keeps_the_mirror_readable():
    m = Mirror("inc")
    try:
        m.apply(1, POLLOUT)
        m.hold(True)                                         # an interrupted recv's bytes
        assert _shown(m.fd) == (True, True)
        m.apply(2, POLLOUT)                                  # tcpd has nothing: still readable
        assert _shown(m.fd) == (True, True)
        m.hold(False)
        assert _shown(m.fd) == (False, True)
    finally:
        m.close()


def test_eof_and_both_ways_shut_show_rdhup_and_hup_for_good():
    m = Mirror("inc")
    poller = select.poll()
    poller.register(m.fd, select.POLLIN | select.POLLOUT | select.POLLRDHUP)
    try:
        m.apply(1, POLLOUT | POLLIN | 0x2000)                # the peer's FIN
        assert poller.poll(0)[0][1] == select.POLLIN | select.POLLOUT | select.POLLRDHUP
        m.apply(2, POLLOUT | POLLIN | 0x2000 | POLLHUP)      # and ours
        assert poller.poll(0)[0][1] & select.POLLHUP
    finally:
        m.close()


def _notifier_without_a_channel():
    """A Notifier's bookkeeping, without its thread and channel (what deliver and watch touch)."""
    import threading
    import weakref

    from libsock._readiness import Notifier
    n = Notifier.__new__(Notifier)
    n.mirrors, n._mirrors_lock, n.early = weakref.WeakValueDictionary(), threading.Lock(), {}
    n.ready, n.failed = threading.Event(), None
    n.ready.set()
    return n


def test_a_gain_that_comes_before_the_socket_is_watched_here_is_kept_for_it():
    """An accepted connection: tcpd watches it from the accept on and tells the first data's gain
    on the readiness channel, which can be read before the accept's answer is back in the
    accepting thread (issue 14's missed gain): kept, then shown once the mirror exists, and the
    accept answer's older state does not undo it."""
    n = _notifier_without_a_channel()
    n.deliver([[7, 2, POLLIN | POLLOUT]])                    # the gain, first
    m = n.watch(7, "inc")                                  # then the accept's answer...
    try:
        m.apply(1, POLLOUT)                                  # ...with the state before the data
        assert _shown(m.fd) == (True, True)
        assert n.early == {}
        n.deliver([[7, 3, POLLOUT]])                         # a watched socket's: applied at once
        assert _shown(m.fd) == (False, True) and n.early == {}
    finally:
        m.close()
