"""The system-call boundary: a call crosses to tcpd as a message and its reply
comes back when Linux would wake the sleeper.

One DEALER socket per thread (so blocking calls in several threads proceed in
parallel), one outstanding request on it at a time.  Calls of one thread reach
tcpd in order; calls of two threads do not, so a call that must follow what
another thread posted on the same socket first waits for it (`after_posts`).
While a reply is awaited, tcpd's liveness is checked every LIVENESS_CHECK
seconds: a call never outlives the tcpd that holds its socket.
"""
from __future__ import annotations

import atexit
import errno
import grp
import json
import multiprocessing.util
from collections import deque
import os
import secrets
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import zmq

from libsock import _readiness
from proto.ipc import codec
from proto.ipc.messages import Call, Reply
from channel.frames import ZERO_COPY_FROM

LIVENESS_CHECK = 0.2
LIVENESS_CHECK_MS = int(LIVENESS_CHECK * 1000)
STARTUP_WAIT = 5.0       # a new socket waits this long for a restarting tcpd
_MORE = int(zmq.SNDMORE)
POSTED_LINGER_MS = 1000  # how long a dropped channel keeps sending what was posted on it
FENCE_WAIT = 2.0         # longest wait for another channel's posted calls (beyond the linger: lost)
BACKSTOP_MARGIN = 1.0    # a call with a timeout still unanswered this long after it is asked about
BACKSTOP_EVERY = 5.0     # a blocking call is asked about this often
ORPHANS_KEPT = 64        # withdrawn calls whose answers a channel still expects
_ORDERED = frozenset({"send", "shutdown", "close", "setsockopt"})    # calls that follow the posted ones
SPARES_KEPT = 8          # channels kept per thread for signal handlers' calls (Stack._spare)
TAKEOVER_WAIT = 30.0     # how long a call waits for a dead tcpd's successor (while supervisord restarts it)


def _error(code: int, message: str | None = None) -> OSError:
    return OSError(code, message or os.strerror(code))


def public_endpoint(run_dir: Path, service: str) -> bool:
    """Is the service's public endpoint there and open to this user (RUN/public/<service>.sock)?
    PermissionError (EACCES) naming the instance and its rule when `netstack up --access` leaves
    this user out: the public directory's mode is the rule, set once at `up`.  An endpoint this
    user may not use yet in a directory it may enter is a service starting (it binds, then gives
    the socket its mode): not there yet."""
    folder = run_dir / "public"
    try:
        os.stat(folder)
    except FileNotFoundError:
        return False
    except PermissionError:         # (the run directory itself: an instance of before --access)
        pass
    else:
        if os.access(folder, os.X_OK):
            return os.access(folder / f"{service}.sock", os.R_OK | os.W_OK)
    raise PermissionError(errno.EACCES, f"netstack instance at {run_dir} refuses uid {os.getuid()} "
                                        f"(--access {_access_rule(run_dir)})")


def _access_rule(run_dir: Path) -> str:
    """The instance's --access rule as the public directory's mode and group show it to anyone
    (services/access.py: 0755 all, 0750 group, 0700 root); RUN/access is root's."""
    try:
        found = os.stat(run_dir / "public")
    except OSError:
        return "root"
    if found.st_mode & 0o007:
        return "all"
    if found.st_mode & 0o070:
        try:
            return f"group:{grp.getgrgid(found.st_gid).gr_name}"
        except KeyError:
            return f"group:{found.st_gid}"
    return "root"


class Stack:
    """The instance found through NETSTACK_RUN."""

    def __init__(self, run_dir: str):
        self.run_dir = Path(run_dir)
        self.endpoint = f"ipc://{self.run_dir / 'public' / 'tcpd.sock'}"
        self._local = threading.local()
        self._tcpd: tuple[str, int] | None = None     # (incarnation, pid) last seen
        self.lost_calls = 0      # calls tcpd dropped unanswered, found by the backstop
        self.resent_calls = 0    # messages sent again to a tcpd that took over from one that died
        # (forking pid, a socket id, secret, the fork's Posted) of the last fork: its child
        # claims its copies with it (services/tcp/owners.py)
        self.fork_token: tuple | None = None

    # -- tcpd liveness ------------------------------------------------------------

    def _read_tcpd(self) -> tuple[str, int] | None:
        """tcpd's newest incarnation and pid, if it is alive."""
        try:
            with open(self.run_dir / "incarnations" / "tcpd", "rb") as record:     # (-> public/)
                record.seek(0, os.SEEK_END)
                record.seek(max(0, record.tell() - 200))
                last = record.read().split(b"\n")[-2].split()
            incarnation, pid = last[0].decode(), int(last[1])
        except (OSError, IndexError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return incarnation, pid

    def down_error(self) -> OSError:
        return _error(errno.ENETDOWN, f"no netstack running at {self.run_dir} (set NETSTACK_RUN, or run netstack up)")

    def _supervised(self) -> bool:
        """Is the instance's supervisord alive (so a missing tcpd is one being restarted)?"""
        try:
            pid = int((self.run_dir / "supervisord.pid").read_text())      # (-> public/)
            os.kill(pid, 0)
        except PermissionError:
            return True                 # alive, root's (this process is not)
        except (OSError, ValueError):
            return False
        return True

    def wait_for_tcpd(self, patience: float) -> tuple[str, int]:
        """tcpd, waiting up to `patience` for one that supervisord is restarting; with no
        supervisord (the instance is down, or its directory a leftover), ENETDOWN at once."""
        deadline = time.monotonic() + patience
        while True:
            # (the endpoint first: a caller the access rule refuses cannot read incarnations/
            # either, and must hear EACCES, not that no tcpd runs)
            reachable = public_endpoint(self.run_dir, "tcpd")
            tcpd = self._read_tcpd()
            if tcpd is not None and reachable:
                return tcpd
            if time.monotonic() >= deadline or not self._supervised():
                raise self.down_error()
            time.sleep(0.02)

    # -- calls --------------------------------------------------------------------

    def _channel(self) -> "_Channel":
        channel = getattr(self._local, "channel", None)
        if channel is None or channel.pid != os.getpid():      # a forked child needs its own
            channel = self._local.channel = self._new_channel()
            with _channels_lock:
                _channels.add(channel)
            inherited = self.fork_token
            if inherited is not None and inherited[0] != os.getpid():     # a forked child's first
                self.fork_token = None
                try:
                    self.after_posts(inherited[1], inherited[3])      # the parent's "fork" first
                    self.post("inherit", inherited[1], [inherited[2]])
                except OSError:
                    pass
        return channel

    def _new_channel(self) -> "_Channel":
        sock = zmq.Context.instance().socket(zmq.DEALER)
        # a thread that posts a close and ends drops its channel: what is queued still leaves
        sock.setsockopt(zmq.LINGER, POSTED_LINGER_MS)
        # tcpd reads the pid from it, and closes what this process holds once it dies
        identity = f"p{os.getpid()}.{secrets.token_hex(6)}".encode()
        sock.setsockopt(zmq.ROUTING_ID, identity)
        sock.connect(self.endpoint)
        tcpd = self._read_tcpd()
        return _Channel(self, sock, identity, tcpd[0] if tcpd is not None else None)

    def call(self, op: str, sid, args: list, timeout: float | None, data: bytes | None = None,
             keep: Callable[[Reply], None] | None = None):
        """Send one call and wait for its reply: (value, data frame or None, send credit); OSError on failure.

        When a signal handler raises while the call sleeps in tcpd, the call is withdrawn
        before the exception goes on; if tcpd had answered it already, `keep` gets that
        answer, so that what it took (data, a connection) is not lost."""
        if sid is None:          # a new socket: the stack must be there, or soon again
            incarnation = self.wait_for_tcpd(STARTUP_WAIT if self.run_dir.exists() else 0)[0]
        else:
            incarnation = sid[0]
        channel = self._channel()
        if channel.waiting or channel.sending:
            # a signal handler's call while a call of this thread waits for its answer, or
            # while a message of this thread is half sent: on a channel of its own, so that
            # neither takes the other's answer nor goes inside the other's message
            busy, channel = channel, self._spare()
            channel.waiting = True
            try:
                if op in _ORDERED and sid is not None and busy.posts > busy.handled:
                    # what the thread posted on its own channel goes first (a handler's send
                    # after the program's sends on the same connection stays behind them)
                    try:
                        self._call_on(channel, incarnation, "fence", sid, [busy.identity, busy.posts],
                                      FENCE_WAIT, None, None)
                    except OSError:
                        pass            # the call itself will say what is wrong with the socket
                return self._call_on(channel, incarnation, op, sid, args, timeout, data, keep)
            finally:
                channel.waiting = False
                if channel not in self._local.spares:
                    channel.sock.close(POSTED_LINGER_MS)    # (handlers nested deeper than kept)
        for _ in range(3):
            channel.waiting = True
            try:
                return self._call_on(channel, incarnation, op, sid, args, timeout, data, keep)
            except _ChannelGone:
                channel = self._channel()           # nothing of the call left: made again on a new one
            finally:
                channel.waiting = False
        raise _error(errno.EIO, "libsock: the channel to tcpd kept closing")

    def _spare(self) -> "_Channel":
        """A channel for a signal handler's call while the thread's own is busy: one per depth
        of handlers within handlers, kept for the next (a new channel per call costs a ZeroMQ
        socket and tcpd a channel state each)."""
        spares = self._local.__dict__.setdefault("spares", [])
        if any(spare.pid != os.getpid() or spare.sock.closed for spare in spares):
            spares[:] = [spare for spare in spares if spare.pid == os.getpid() and not spare.sock.closed]
        for spare in spares:
            if not (spare.waiting or spare.sending):
                return spare
        spare = self._new_channel()
        with _channels_lock:
            _channels.add(spare)
        if len(spares) < SPARES_KEPT:
            spares.append(spare)
        return spare

    def _call_on(self, channel: "_Channel", incarnation: str, op: str, sid, args: list, timeout,
                 data: bytes | None, keep: Callable[[Reply], None] | None):
        sock = channel.sock
        payload = (data,) if data is not None else ()
        request_id, frames = self._send_numbered(
            channel, lambda n: Call(n, op, sid, args, timeout, payload=payload), first=True)
        # the backstop: a call still unanswered this long is asked about (tcpd may have lost it)
        ask_at = time.monotonic() + (BACKSTOP_EVERY if timeout is None else timeout + BACKSTOP_MARGIN)
        probe_id = None
        reissued = False
        while True:
            try:
                ready = sock.poll(LIVENESS_CHECK_MS)   # takes nothing: a signal here leaves the answer
            except BaseException:                # a signal handler raised (KeyboardInterrupt, ...)
                self._withdraw(channel, request_id, sid, keep)
                raise
            if ready:
                try:
                    reply = codec.decode(self._take(sock))
                except codec.MessageError:
                    continue
                except BaseException:            # a signal as the answer was taken: the channel is whole
                    self._withdraw(channel, request_id, sid, keep)      # (and the answer, if it was
                    raise                                               # this one, lost: a rare window)
                if not isinstance(reply, Reply):
                    continue
                channel.confirm(reply.id)
                if channel.orphans and channel.adopt(reply):
                    continue                     # a withdrawn call's late answer (its keep has it)
                if reply.id == probe_id:
                    probe_id = None
                    if reply.errno or reply.value:       # (it sleeps in tcpd: wait on)
                        continue
                    # tcpd holds no such call and had not answered it (an answer would have come
                    # first on this channel): it was lost.  Once, it goes again; then, EIO
                    self.lost_calls += 1
                    if reissued:
                        raise _error(errno.EIO, f"the stack lost the call {op} twice")
                    reissued = True
                    request_id, frames = self._send_numbered(
                        channel, lambda n: Call(n, op, sid, args, timeout, payload=payload))
                    ask_at = time.monotonic() + (BACKSTOP_EVERY if timeout is None else timeout + BACKSTOP_MARGIN)
                    continue
                if reply.id != request_id:
                    continue                     # the answer to a call abandoned earlier
                if reply.ready is not None:      # the socket's readiness, for its fileno() (_readiness.py)
                    _readiness.apply(self, sid[1], reply.ready)
                if reply.errno:
                    failure = _error(reply.errno)
                    failure.told = reply.value       # what tcpd says of the socket with it (connect: SS_*)
                    raise failure
                return reply.value, (reply.payload[0] if reply.payload else None), reply.credit
            tcpd = self._read_tcpd()
            if tcpd is not None and tcpd[0] == channel.incarnation:
                if sid is not None and probe_id is None and time.monotonic() >= ask_at:
                    probe_id = -1 if keep is None else \
                    self._send_numbered(channel, lambda n: Call(n, "probe", sid, [request_id], 0))[0]
                    ask_at = time.monotonic() + BACKSTOP_EVERY
                continue
            successor = self._taken_over(channel, tcpd, sid)
            if successor is not None:
                # a new tcpd holds what the old one did: what it may not have had goes again
                self._resend(channel, request_id, frames, successor)
                probe_id = None
                continue
            self._abandon(channel)
            if sid is None and tcpd is None:
                raise self.down_error()
            raise _error(errno.ECONNRESET, f"Connection reset by peer (the stack's tcpd restarted)")

    # -- a new tcpd ---------------------------------------------------------------

    def _lineage(self) -> tuple[str, set] | None:
        """The newest tcpd's incarnation and the incarnations whose sockets it holds (it writes
        this once it has recovered them from its store)."""
        try:
            record = json.loads((self.run_dir / "public" / "tcpd.lineage").read_text())
            return record["incarnation"], set(record["holds"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _taken_over(self, channel: "_Channel", tcpd: tuple[str, int] | None, sid) -> str | None:
        """The tcpd this channel spoke to died: wait for its successor (while supervisord
        restarts it); its incarnation if it holds the channel's and the socket's state."""
        deadline = time.monotonic() + TAKEOVER_WAIT
        while True:
            if tcpd is not None:
                lineage = self._lineage()
                if lineage is not None and lineage[0] == tcpd[0]:
                    holds = lineage[1]
                    if channel.incarnation in holds and (sid is None or sid[0] in holds):
                        return tcpd[0]
                    return None
            if time.monotonic() >= deadline or not self._supervised():
                return None
            time.sleep(0.01)
            tcpd = self._read_tcpd()

    def _resend(self, channel: "_Channel", request_id: int, frames: list, successor: str) -> None:
        """Everything tcpd may not have handled, in order: it skips what it has (channels.py)."""
        pending = dict(channel.unconfirmed)
        pending.setdefault(request_id, frames)
        for number in sorted(pending):
            self._send_whole(channel, pending[number])
        channel.incarnation = successor
        self.resent_calls += len(pending)

    def _send_numbered(self, channel: "_Channel", make: Callable[[int], Call], first: bool = False,
                       posted: bool = False) -> tuple[int, list]:
        """Send the channel's next message (`make(number)`; posted ones carry minus it), kept
        until tcpd is known to have it.  A message a signal stopped before any of it left gives
        its number back; one torn after its first frame is kept as tcpd got it."""
        channel.frames_sent = 0
        number = None
        channel.sending = True      # from here, a signal handler's call takes a channel of its own
        try:
            # (all inside: a handler raising between taking the number and sending would leave
            # a gap, after which tcpd drops every message of the channel; one calling on this
            # channel would take the same number)
            number = channel.seq + 1
            frames = codec.encode(make(-number if posted else number))
            channel.seq = number
            channel.unconfirmed.append((number, frames))
            if first:
                self._send_first(channel, frames)
            else:
                self._send_whole(channel, frames)
        except (_ChannelGone, zmq.ZMQError):
            if channel.frames_sent == 0:
                if channel.unconfirmed and channel.unconfirmed[-1][0] == number:
                    channel.unconfirmed.pop()
                channel.seq = number - 1
            raise
        except BaseException:
            if number is None or channel.seq != number:
                raise                       # the number was not taken: nothing happened
            channel.sending = True
            if not (channel.unconfirmed and channel.unconfirmed[-1][0] == number):
                channel.unconfirmed.append((number, frames))
            if channel.frames_sent == 0:
                # a signal handler raised as the message went: before its first frame left, or
                # just after (between ZeroMQ's return and the next line), which cannot be told
                # apart.  The number is spent either way: an empty frame ends the message if
                # its first frame is out (a send of nothing), and a no-op with the same number
                # follows, which tcpd skips as a copy if the message got there (channels.py)
                filler = codec.encode(Call(-number, "sync", [channel.incarnation or "", 0], [], None))
                channel.unconfirmed[-1] = (number, filler)
                self._fill(channel, filler)
            else:
                channel.unconfirmed[-1] = (number, frames[:channel.frames_sent] + [b""])
            raise
        finally:
            channel.sending = False
        return number, frames

    @staticmethod
    def _fill(channel: "_Channel", filler: list) -> None:
        deferred: BaseException | None = None
        for frame in (b"", filler[0]):
            while True:
                try:
                    channel.sock.send(frame, 0)
                    break
                except zmq.ZMQError:
                    return
                except BaseException as exc:        # (sent again if it had left: a copy, skipped)
                    deferred = exc
        if deferred is not None:
            raise deferred

    def _withdraw(self, channel: "_Channel", request_id: int, sid,
                  keep: Callable[[Reply], None] | None) -> None:
        """Take back a call its caller no longer waits for: tcpd ends it with EINTR if it
        still sleeps there, else its answer is already on the way and goes to `keep`.

        The cancel is followed by a probe: tcpd handles a channel's messages in order, so its
        answer comes after the call's, if there is one (none when tcpd lost the call).  A
        second signal handler that raises meanwhile ends the wait: the call is left to the
        channel's next reader (`orphans`), which hands its answer to `keep` when it comes.
        The channel stays: dropping it (as before) lost what was posted on it, or let that
        arrive after what the next channel carried."""
        if sid is None:
            return              # no socket to name: a late answer is told apart by its id
        sock = channel.sock
        channel.orphan(request_id, keep)
        deferred: BaseException | None = None
        probe_id = None
        while probe_id is None:         # (the two sends take microseconds: handlers held back)
            try:
                channel.posts, _ = self._send_numbered(
                    channel, lambda n: Call(n, "cancel", sid, [request_id], None), posted=True)
                probe_id = -1 if keep is None else \
                    self._send_numbered(channel, lambda n: Call(n, "probe", sid, [request_id], 0))[0]
            except zmq.ZMQError:
                break
            except BaseException as exc:        # (nothing of it left, or it was ended whole: again)
                deferred = exc
        if deferred is not None:
            raise deferred
        if keep is None:
            return          # nothing its answer carries is kept: the channel's next reader skips it
        channel.orphan(probe_id, None)
        while request_id in channel.orphans or probe_id in channel.orphans:
            if not sock.poll(LIVENESS_CHECK_MS):
                tcpd = self._read_tcpd()
                if tcpd is None or tcpd[0] != channel.incarnation:
                    return          # gone, and the call with it (a new tcpd is _call_on's)
                continue
            try:
                reply = codec.decode(self._take(sock))
            except codec.MessageError:
                continue
            if isinstance(reply, Reply):
                channel.confirm(reply.id)
                channel.adopt(reply)

    def post(self, op: str, sid, args: list, data: bytes | None = None) -> "Posted":
        """Send a call nobody waits for (id minus its number): a send within the socket's credit, or a close.

        Calls from one thread reach tcpd in order, so the next call of this
        thread finds the posted one done; at exit, `flush_posted` makes sure the
        last posted calls have left the process.  The caller keeps the returned
        mark, for `after_posts`.
        """
        channel = self._channel()
        if channel.sending:
            # a signal handler's post while a message of this thread is half sent: made as a
            # call on a channel of its own (call() takes one), done when it returns
            self.call(op, sid, args, None, data)
            return Posted(channel, channel.identity, channel.posts)
        payload = (data,) if data is not None else ()
        for _ in range(3):
            try:
                channel.posts, _ = self._send_numbered(channel, lambda n: Call(n, op, sid, args, None, payload=payload),
                                                       first=True, posted=True)
            except _ChannelGone:
                channel = self._channel()
                continue
            return Posted(channel, channel.identity, channel.posts)
        raise _error(errno.EIO, "libsock: the channel to tcpd kept closing")

    def after_posts(self, sid, mark: "Posted") -> bool:
        """Before a call on `sid` that must come after the posted calls up to `mark`
        (a send after a send, a close after a send): wait until tcpd has handled
        them, unless they went out on this thread's channel, whose calls arrive in
        order anyway.  True when they are known handled (the mark can go)."""
        channel = mark.channel
        if channel is not None:
            if channel.handled >= mark.count:
                return True
            if channel is getattr(self._local, "channel", None) and channel.pid == os.getpid():
                return False
        # another thread's (or, after fork, the parent's, or a dropped) channel: tcpd waits for them,
        # all that went on that channel (a post whose mark a signal kept from its socket too)
        count = max(mark.count, channel.posts) if channel is not None else mark.count
        try:
            self.call("fence", sid, [mark.identity, count], FENCE_WAIT)
        except OSError:
            pass    # lost with a channel dropped too soon, or the socket is gone: the call itself will say
        return True

    def sync(self) -> None:
        """Wait until tcpd has everything this thread posted (any answer will do)."""
        tcpd = self._read_tcpd()
        if tcpd is None:
            return               # tcpd is gone, and what it held with it
        try:
            self.call("sync", [tcpd[0], 0], [], 0)
        except OSError:
            pass

    def _send_whole(self, channel: "_Channel", frames: list) -> None:
        """A message's frames, all or none.  A signal handler that raises between two frames
        (this is a Python loop) would leave the message unfinished in the socket, and the
        next message would be appended to it.  Then the message is ended at once with an
        empty frame: tcpd reads it as a send of nothing (the only call with a data frame) or
        as malformed, and drops it (counted); the channel keeps its place and its order.
        Costs nothing on the way."""
        sock = channel.sock
        last = len(frames) - 1
        copy = len(frames[-1]) < ZERO_COPY_FROM
        done = channel.frames_sent = 0
        channel.sending = True
        try:
            for i, frame in enumerate(frames):
                sock.send(frame, _MORE if i < last else 0, copy=copy)
                done = channel.frames_sent = i + 1
        except BaseException:
            if 0 < done <= last:                 # (a complete message gets a stray empty one: dropped)
                self._end_torn(channel)
            raise
        finally:
            channel.sending = False

    def _end_torn(self, channel: "_Channel") -> None:
        """End a torn message with an empty frame.  A handler that raises again meanwhile is
        held back until the frame is out (a send of one frame, microseconds): dropping the
        channel instead let what it still queued arrive after what the next channel carried."""
        deferred: BaseException | None = None
        while True:
            try:
                channel.sock.send(b"", 0)
                break
            except zmq.ZMQError:
                break               # closed under us: ZeroMQ rolls the unfinished message back
            except BaseException as exc:
                deferred = exc
        if deferred is not None:
            raise deferred

    @staticmethod
    def _take(sock: zmq.Socket) -> list:
        """One whole message.  A signal handler that raises once part of it is taken would
        leave the rest to be read as a message of its own: the rest is taken and dropped
        first (further handlers' exceptions held back meanwhile), then the exception goes on."""
        try:
            return sock.recv_multipart()
        except BaseException:
            deferred = None
            while True:
                try:
                    if not sock.getsockopt(zmq.RCVMORE):
                        break
                    sock.recv(zmq.NOBLOCK)      # the rest of a message is in the socket already
                except zmq.ZMQError:
                    break
                except BaseException as exc:
                    deferred = exc
            if deferred is not None:
                raise deferred
            raise

    def _send_first(self, channel: "_Channel", frames: list) -> None:
        """`_send_whole` for a message that is the first of its call: a channel found closed
        under it (a signal handler's call tore it, and its exception was swallowed, as in a
        finalizer) is _ChannelGone, for the caller to go again on a new channel: nothing of
        the message left (ZeroMQ rolled it back), so nothing happens twice."""
        try:
            self._send_whole(channel, frames)
        except zmq.ZMQError as exc:
            if channel.sock.closed:
                raise _ChannelGone() from exc
            raise

    def _abandon(self, channel: "_Channel") -> None:
        """Drop a channel: a new one will not receive the dead call's answer.  (Forgotten before
        it is closed: a signal in between must not leave a closed channel to the next call.)"""
        if getattr(self._local, "channel", None) is channel:
            self._local.channel = None
        channel.sock.close(0)


class _ChannelGone(Exception):
    """The channel was closed under a message before any of it left."""


class _Channel:
    """One thread's DEALER to tcpd, and how many of the calls it posted tcpd is known to have."""

    def __init__(self, stack: Stack, sock: zmq.Socket, identity: bytes, incarnation: str | None):
        self.stack, self.sock, self.pid, self.identity = stack, sock, os.getpid(), identity
        self.thread = threading.current_thread()
        self.incarnation = incarnation   # the tcpd it speaks to
        self.seq = 0             # the number of its last message (tcpd handles them in order, once)
        self.posts = 0           # the number of its last posted call
        self.handled = 0         # tcpd has handled its messages up to this number
        self.unconfirmed: deque = deque()    # [(number, frames)] sent, not yet known handled
        self.waiting = False     # a call on it waits for its answer
        self.sending = False     # a message is going out on it, frame by frame
        self.frames_sent = 0     # ... and how many of its frames left
        self.orphans: dict = {}  # call id -> keep: withdrawn calls whose answers are still to come

    @property
    def unsynced(self) -> bool:
        return self.handled < self.posts

    def orphan(self, call_id: int, keep: Callable[[Reply], None] | None) -> None:
        """A call whose caller no longer waits: its answer, when read, goes to `keep`."""
        self.orphans[call_id] = keep
        while len(self.orphans) > ORPHANS_KEPT:          # (lost by tcpd: no answer will come)
            del self.orphans[next(iter(self.orphans))]

    def adopt(self, reply: Reply) -> bool:
        """`reply` answers an orphaned call: handed to its keep (unless it says EINTR)."""
        if reply.id not in self.orphans:
            return False
        keep = self.orphans.pop(reply.id)
        if keep is not None and reply.errno != errno.EINTR:
            keep(reply)
        return True

    def confirm(self, number: int) -> None:
        """An answer to message `number`: tcpd has handled everything up to it."""
        if number > self.handled:
            self.handled = number
            unconfirmed = self.unconfirmed
            while unconfirmed and unconfirmed[0][0] <= number:
                unconfirmed.popleft()


@dataclass(frozen=True, slots=True)
class Posted:
    """Where a socket's last posted call went: the channel, and its count of posts then."""
    channel: "_Channel"              # held: a fence asks for all it carried (a dropped one too)
    identity: bytes
    count: int


_channels: "weakref.WeakSet[_Channel]" = weakref.WeakSet()    # a thread's channel goes with the thread
_channels_lock = threading.Lock()


def flush_posted() -> None:
    """At exit: wait until tcpd holds every call this process posted (a posted close
    or send still queued in ZeroMQ would otherwise die with the process).  Only
    channels of this thread or of finished threads are used: a socket is not
    shared between running threads."""
    me = threading.current_thread()
    with _channels_lock:
        channels = [channel for channel in _channels if channel.pid == os.getpid()]
    for channel in channels:
        st = channel.stack
        if channel.unsynced and not channel.sock.closed and (channel.thread is me or not channel.thread.is_alive()):
            own = getattr(st._local, "channel", None)
            st._local.channel = channel          # borrow it for this thread's sync call
            try:
                st.sync()
            finally:
                st._local.channel = own


exit_hooks: list = []         # run at exit before the posted calls are flushed (libsock closes its sockets)


def _on_exit() -> None:
    for hook in exit_hooks:
        hook()
    flush_posted()


class _AtExit:
    """Runs exit_hooks and flush_posted at exit, also in multiprocessing's children,
    which end with os._exit (no atexit) after the finalizers registered since the fork."""

    def __init__(self) -> None:
        atexit.register(_on_exit)
        self.register()

    def register(self) -> None:
        multiprocessing.util.Finalize(None, _on_exit, exitpriority=100)
        multiprocessing.util.register_after_fork(self, _AtExit.register)


_at_exit = _AtExit()


_stacks: dict[str, Stack] = {}
_stacks_lock = threading.Lock()


def stack() -> Stack:
    run_dir = os.environ.get("NETSTACK_RUN", "/run/netstack/default")
    with _stacks_lock:
        found = _stacks.get(run_dir)
        if found is None:
            found = _stacks[run_dir] = Stack(run_dir)
        return found
