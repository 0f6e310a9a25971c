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
from collections import deque
import errno
import grp
import json
import multiprocessing.util
import os
import secrets
import sys
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
        if channel.user is not None and channel.busy:
            # a signal handler's call while a call or post of this thread is under way on its
            # channel (half sent, or waiting for its answer): on a channel of its own, so that
            # neither takes the other's answer nor goes inside the other's message
            busy, channel = channel, self._spare()
            channel.user = sys._getframe()
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
                channel.user = None
                if channel not in self._local.spares:
                    channel.sock.close(POSTED_LINGER_MS)    # (handlers nested deeper than kept)
        for _ in range(3):
            channel.user = sys._getframe()
            try:
                return self._call_on(channel, incarnation, op, sid, args, timeout, data, keep)
            except _ChannelGone:
                pass                                # nothing of the call left: made again on a new one
            finally:
                channel.user = None
            channel = self._channel()
        raise _error(errno.EIO, "libsock: the channel to tcpd kept closing")

    def _spare(self) -> "_Channel":
        """A channel for a signal handler's call while the thread's own is busy: one per depth
        of handlers within handlers, kept for the next (a new channel per call costs a ZeroMQ
        socket and tcpd a channel state each)."""
        spares = self._local.__dict__.setdefault("spares", [])
        if any(spare.pid != os.getpid() or spare.sock.closed for spare in spares):
            spares[:] = [spare for spare in spares if spare.pid == os.getpid() and not spare.sock.closed]
        for spare in spares:
            if not spare.busy:
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
            channel, lambda n: Call(n, op, sid, args, timeout, payload=payload), first=True, sid=sid, keep=keep)
        # the backstop: a call still unanswered this long is asked about (tcpd may have lost it)
        ask_at = time.monotonic() + (BACKSTOP_EVERY if timeout is None else timeout + BACKSTOP_MARGIN)
        probe_id = None
        reissued = False
        answered = False
        try:
            while True:
                if sock.poll(LIVENESS_CHECK_MS):     # takes nothing: a signal here leaves the answer
                    try:
                        reply = codec.decode(self._take(channel))
                    except codec.MessageError:
                        continue
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
                            answered = True
                            raise _error(errno.EIO, f"the stack lost the call {op} twice")
                        reissued = True
                        request_id, frames = self._send_numbered(
                            channel, lambda n: Call(n, op, sid, args, timeout, payload=payload), sid=sid, keep=keep)
                        ask_at = time.monotonic() + (BACKSTOP_EVERY if timeout is None else timeout + BACKSTOP_MARGIN)
                        continue
                    if reply.id != request_id:
                        continue                     # the answer to a call abandoned earlier
                    answered = True
                    if reply.ready is not None:      # the socket's readiness, for its fileno() (_readiness.py)
                        _readiness.apply(self, sid[1], reply.ready)
                    if reply.errno:
                        failure = _error(reply.errno)
                        failure.told = reply.value       # what tcpd says of the socket with it (connect: SS_*)
                        raise failure
                    return reply.value, (reply.payload[0] if reply.payload else None), reply.credit
                tcpd = self._read_tcpd()
                if tcpd is not None and tcpd[0] == channel.incarnation:
                    if sid is not None and time.monotonic() >= ask_at:
                        if probe_id is not None:
                            # not even the probe was answered: a message of this channel never
                            # reached tcpd whole (which then drops all that follow it): all that
                            # tcpd has not confirmed goes again (it skips what it has)
                            self.lost_calls += 1
                            self._resend(channel, request_id, frames, channel.incarnation)
                        probe_id = self._send_numbered(channel, lambda n: Call(n, "probe", sid, [request_id], 0))[0]
                        ask_at = time.monotonic() + BACKSTOP_EVERY
                    continue
                successor = self._taken_over(channel, tcpd, sid)
                if successor is not None:
                    # a new tcpd holds what the old one did: what it may not have had goes again
                    self._resend(channel, request_id, frames, successor)
                    probe_id = None
                    continue
                answered = True
                self._abandon(channel)
                if sid is None and tcpd is None:
                    raise self.down_error()
                raise _error(errno.ECONNRESET, f"Connection reset by peer (the stack's tcpd restarted)")
        except BaseException:
            if not answered:                 # a signal handler raised (KeyboardInterrupt, ...)
                self._withdraw(channel, request_id, sid, keep)
            raise

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
            self._send_whole(channel, pending[number] or _filler(channel, number))
        channel.incarnation = successor
        self.resent_calls += len(pending)

    def _send_numbered(self, channel: "_Channel", make: Callable[[int], Call], first: bool = False,
                       posted: bool = False, sid=None, keep: Callable[[Reply], None] | None = None
                       ) -> tuple[int, list]:
        """Send the channel's next message (`make(number)`; posted ones carry minus it), kept
        until tcpd is known to have it.

        A signal handler can raise anywhere in here, and again in whatever would repair what
        the first left (CPython runs the next pending handler right after the next C call
        returns): so nothing is repaired on the way out.  The number is taken, and the
        message recorded as `pending` (its place to be taken by a no-op filler of the same
        number), in one step: stores with no call between them, where no handler runs; only
        once the whole message is out does the record go.  A record left behind is finished
        by the channel's next user (`_mend`): the filler goes (tcpd skips it as a copy if the message got there, else
        the number is not left a gap, after which tcpd drops every message of the channel),
        and a call waited for is withdrawn.  A waited call whose `sid` is given and whose
        caller a handler took away is withdrawn then (its answer to `keep`)."""
        if channel.open or channel.pending or channel.reading:
            self._mend(channel)
        number = channel.seq + 1
        frames = codec.encode(make(-number if posted else number))
        # one step: a handler runs before (nothing happened) or after (recorded; None: its
        # filler, made when needed)
        channel.unconfirmed.append((number, None))   # (first: if a handler raises right after
        channel.pending[number] = (None, None if posted else sid, keep)    # it, the number is reused)
        channel.seq = number
        if posted:
            channel.posts = number
        try:
            self._send_frames(channel, frames)
        except zmq.ZMQError as exc:
            if first and channel.sock.closed:
                raise _ChannelGone() from exc       # closed under it: ZeroMQ dropped what was unfinished
            raise
        channel.unconfirmed[-1] = (number, frames)  # (what goes again to a new tcpd: the message)
        del channel.pending[number]
        return number, frames

    def _send_frames(self, channel: "_Channel", frames: list) -> None:
        """A message's frames.  `open` while they go: a handler that raises between two of
        them leaves the message unfinished in the socket (the next message would be appended
        to it), and the channel's next message ends it first (`_mend`)."""
        sock = channel.sock
        last = len(frames) - 1
        copy = len(frames[-1]) < ZERO_COPY_FROM
        channel.open = True
        for i, frame in enumerate(frames):
            sock.send(frame, _MORE if i < last else 0, copy=copy)
        channel.open = False

    def _send_whole(self, channel: "_Channel", frames: list) -> None:
        """A message's frames, after ending one a signal left unfinished on the channel."""
        if channel.open:
            self._mend(channel)
        self._send_frames(channel, frames)

    def _mend(self, channel: "_Channel") -> None:
        """Finish what signal handlers that raised left undone on the channel, before it is used
        again.  Each step may be cut short by another handler (the exception goes to the
        caller, whose call then did nothing) and is simply done again at the next use: every
        step is harmless twice (an empty message alone is dropped by tcpd as malformed; a
        filler or cancel sent again is a copy, skipped).
          - a message left unfinished is ended with an empty frame (tcpd reads a send of
            nothing, or drops it as malformed: nothing of the next message goes inside it);
          - the rest of an answer half taken is dropped (it would be read as messages);
          - each message left `pending` gets its filler; a waited call among them is withdrawn:
            its answer (or EINTR) goes to its keep, and a posted cancel, recorded like any
            message before it goes, ends it in tcpd if it sleeps there."""
        sock = channel.sock
        if channel.open:
            sock.send(b"", 0)
            channel.open = False
        if channel.reading:
            while sock.getsockopt(zmq.RCVMORE):
                sock.recv(zmq.NOBLOCK)
            channel.reading = False
        pending = channel.pending
        while pending:
            number = next(iter(pending))
            filler, sid, keep = pending[number]
            if filler is None:
                filler = _filler(channel, number)[0]
            if filler:
                sock.send(filler, 0)
            if sid is not None:
                channel.orphan(number, keep)
                cancel = codec.encode(Call(-(channel.seq + 1), "cancel", sid, [number], None))
                # one step, as in _send_numbered (the cancel is its own filler: a copy if it went)
                channel.unconfirmed.append((channel.seq + 1, cancel))
                pending[channel.seq + 1] = (cancel[0], None, None)
                channel.seq = channel.posts = channel.seq + 1
            del pending[number]

    def _withdraw(self, channel: "_Channel", request_id: int, sid,
                  keep: Callable[[Reply], None] | None) -> None:
        """Take back a call its caller no longer waits for: tcpd ends it with EINTR if it
        still sleeps there, else its answer is already on the way and goes to `keep`.

        The call is recorded as pending withdrawal and the channel mended (`_mend`: a posted
        cancel).  With a keep, a probe follows and is waited for: tcpd handles a channel's
        messages in order, so the call's answer comes before the probe's, if there is one
        (none when tcpd lost the call, or when a handler took it as it was read).  Another
        handler that raises meanwhile ends the wait: the call is left to the channel's next
        user (`pending`) or reader (`orphans`), which hands its answer to `keep` when it comes."""
        if sid is None:
            return              # no socket to name: a late answer is told apart by its id
        sock = channel.sock
        channel.pending[request_id] = (b"", sid, keep)      # (sent whole: no filler)
        deferred: BaseException | None = None
        for _ in range(3):      # (a few sends, microseconds: handlers' exceptions held back meanwhile)
            try:
                self._mend(channel)
                break
            except zmq.ZMQError:
                return
            except BaseException as exc:
                deferred = exc
        if deferred is not None:
            raise deferred
        if keep is None:
            return          # nothing its answer carries is kept: the channel's next reader skips it
        try:
            probe_id = self._send_numbered(channel, lambda n: Call(n, "probe", sid, [request_id], 0))[0]
        except zmq.ZMQError:
            return
        channel.orphan(probe_id, None)
        while request_id in channel.orphans or probe_id in channel.orphans:
            if not sock.poll(LIVENESS_CHECK_MS):
                tcpd = self._read_tcpd()
                if tcpd is None or tcpd[0] != channel.incarnation:
                    return          # gone, and the call with it (a new tcpd is _call_on's)
                continue
            try:
                reply = codec.decode(self._take(channel))
            except codec.MessageError:
                continue
            if isinstance(reply, Reply):
                channel.confirm(reply.id)
                channel.adopt(reply)
                if reply.id == probe_id:
                    channel.orphans.pop(request_id, None)     # its answer came before, or never will

    def post(self, op: str, sid, args: list, data: bytes | None = None) -> "Posted":
        """Send a call nobody waits for (id minus its number): a send within the socket's credit, or a close.

        Calls from one thread reach tcpd in order, so the next call of this
        thread finds the posted one done; at exit, `flush_posted` makes sure the
        last posted calls have left the process.  The caller keeps the returned
        mark, for `after_posts`.
        """
        channel = self._channel()
        if channel.user is not None and channel.busy:
            # a signal handler's post while a call or post of this thread is under way on its
            # channel: made as a call on a channel of its own (call() takes one), done when it returns
            self.call(op, sid, args, None, data)
            return Posted(channel, channel.identity, channel.posts)
        payload = (data,) if data is not None else ()
        for _ in range(3):
            channel.user = sys._getframe()
            try:
                number, _ = self._send_numbered(channel, lambda n: Call(n, op, sid, args, None, payload=payload),
                                                first=True, posted=True)
                return Posted(channel, channel.identity, number)
            except _ChannelGone:
                pass
            finally:
                channel.user = None
            channel = self._channel()
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

    @staticmethod
    def _take(channel: "_Channel") -> list:
        """One whole message, or nothing.  `reading` while it is taken: a signal handler that
        raises between its frames leaves the rest in the socket, which the next reader drops
        first (and then polls again)."""
        sock = channel.sock
        if channel.reading:
            while sock.getsockopt(zmq.RCVMORE):
                sock.recv(zmq.NOBLOCK)
            channel.reading = False
            return []
        channel.reading = True
        frames = sock.recv_multipart()
        channel.reading = False
        return frames

    def _abandon(self, channel: "_Channel") -> None:
        """Drop a channel: a new one will not receive the dead call's answer.  (Forgotten before
        it is closed: a signal in between must not leave a closed channel to the next call.)"""
        if getattr(self._local, "channel", None) is channel:
            self._local.channel = None
        channel.sock.close(0)


def _filler(channel: "_Channel", number: int) -> list:
    """A no-op numbered `number` (posted): in the place of a message a signal stopped; tcpd
    skips it as a copy if the message got there."""
    return codec.encode(Call(-number, "sync", [channel.incarnation or "", 0], [], None))


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
        self.unconfirmed: deque = deque()    # [(number, frames or None: its filler)] sent, not yet known handled
        self.orphans: dict = {}  # call id -> keep: withdrawn calls whose answers are still to come
        # what a signal handler that raised can leave half done, finished by the next user (_mend):
        self.user = None         # the frame of the call or post using it (a handler's call nested in it takes a spare)
        self.open = False        # a message's frames are going out
        self.reading = False     # an answer's frames are being taken
        # number -> (what goes in its place: None its filler, b"" nothing; the sid of a waited call
        # to withdraw; its keep): messages not known to have left whole
        self.pending: dict = {}

    @property
    def busy(self) -> bool:
        """Is a call or post of this thread under way on it (a signal handler runs nested in the
        frame it interrupted)?  A user whose frame a handler's exception ended is gone."""
        user = self.user
        if user is None:
            return False
        frame = sys._getframe(1)
        while frame is not None:
            if frame is user:
                return True
            frame = frame.f_back
        self.user = None
        return False

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
_channels_lock = threading.RLock()    # (reentrant: a signal handler's call may need it while the
                                         # frame it interrupted holds it)


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
_stacks_lock = threading.RLock()      # (reentrant, as _channels_lock)


def stack() -> Stack:
    run_dir = os.environ.get("NETSTACK_RUN", "/run/netstack/default")
    with _stacks_lock:
        found = _stacks.get(run_dir)
        if found is None:
            found = _stacks[run_dir] = Stack(run_dir)
        return found
