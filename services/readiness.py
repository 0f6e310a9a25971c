"""Which processes watch which sockets' readiness, and what each was last told.

A program that asks a libsock socket for its fileno() gets a real descriptor that
libsock keeps readable and writable as the socket is (libsock/_readiness.py).  For
that, the service holding the socket (tcpd, udpd) tells the process the socket's
poll mask (Linux's tcp_poll or udp_poll, computed by the engine):

- once when the process starts watching (a posted "watch" naming its readiness
  channel), on that channel;
- in every Reply to the process's calls on the socket (`ready`), which is how a
  bit goes away (a recv that emptied the queue, a send that filled the buffer);
- on the readiness channel when the engine wakes the socket and its mask now has
  a bit the process was not told of.  Only gains travel unasked, and only once:
  a bulk transfer into a socket nobody reads sends one message, not one per
  segment (gVisor's waiter queues and Linux's wake-ups notify per event; the
  mirror only needs the edges).

Each (socket, process) pair stamps what it tells with a version that counts up;
libsock applies a mask only if it is newer than the one it holds, so a Reply and
a notification that cross on different channels never leave a stale state.

Pure bookkeeping: the service's shell computes masks, sends, and knows the pids.
"""
from __future__ import annotations

from dataclasses import dataclass

# the bits a watcher's descriptor shows (select's read set: IN|HUP|ERR; write set: OUT|ERR)
from proto.poll import POLLERR, POLLHUP, POLLIN, POLLOUT, POLLRDHUP
from services.access import identity_pid

SHOWN = POLLIN | POLLOUT | POLLERR | POLLHUP | POLLRDHUP


@dataclass(slots=True)
class Watch:
    channel: bytes      # the process's readiness channel (a ZeroMQ routing id)
    told: int = 0       # the mask it was last told (in a Reply or a notification)
    version: int = 0


class Readiness:
    def __init__(self, epoch: int = 0) -> None:
        self._watches: dict[int, dict[int, Watch]] = {}     # socket id -> pid -> Watch
        # versions start here: a tcpd that took over from one that died tells each watcher
        # something newer than anything the dead one did (epoch: how many came before it)
        self.first_version = epoch << 40

    def __contains__(self, sid: int) -> bool:
        return sid in self._watches

    def __len__(self) -> int:
        return len(self._watches)

    def watch_call(self, sid: int, pid: int | None, channel: bytes) -> bool:
        """A `watch` call of process `pid`: registered if `channel` is that process's own
        readiness channel (libsock names it n<pid>.<random>), else False (EINVAL)."""
        if pid is None or identity_pid(channel) != pid:
            return False
        self.watch(sid, pid, channel, 0)
        return True

    def watch(self, sid: int, pid: int, channel: bytes, mask: int) -> list:
        """Process `pid` watches `sid` through `channel`: the entry to send it now."""
        watch = self._watches.setdefault(sid, {}).get(pid)
        if watch is None:
            watch = self._watches[sid][pid] = Watch(channel, 0, self.first_version)
        watch.channel = channel
        return self._tell(sid, watch, mask)

    def channel(self, sid: int, pid: int | None) -> bytes | None:
        """The readiness channel through which `pid` watches `sid`, if it does."""
        watch = self._watches.get(sid, {}).get(pid)
        return watch.channel if watch is not None else None

    def stamp(self, sid: int, pid: int | None, mask_of) -> list | None:
        """A Reply to `pid` on `sid` is leaving: `[version, mask]` for it, or None when the
        process does not watch the socket.  `mask_of(sid)` is computed only when needed."""
        watches = self._watches.get(sid)
        if watches is None or pid is None:
            return None
        watch = watches.get(pid)
        if watch is None:
            return None
        _, version, mask = self._tell(sid, watch, mask_of(sid))
        return [version, mask]

    def gained(self, sids, mask_of) -> dict[bytes, list]:
        """After the engine woke `sids`: per readiness channel, the entries to send (only
        for sockets whose mask now shows a bit their watcher was not told of)."""
        out: dict[bytes, list] = {}
        watches_of = self._watches
        for sid in sids:
            watches = watches_of.get(sid)
            if watches is None:
                continue
            mask = mask_of(sid) & SHOWN
            for watch in watches.values():
                if mask & ~watch.told:
                    out.setdefault(watch.channel, []).append(self._tell(sid, watch, mask))
        return out

    def retell(self, channel: bytes, mask_of) -> list:
        """Every socket watched through `channel`, told again (its process said hello: what was
        sent to it before may have been dropped on the way)."""
        return [self._tell(sid, watch, mask_of(sid) & SHOWN)
                for sid, watches in self._watches.items()
                for watch in watches.values() if watch.channel == channel]

    def watchers(self, sid: int) -> dict[int, bytes]:
        """pid -> readiness channel, of the processes watching `sid` (what tcpd's store keeps)."""
        return {pid: watch.channel for pid, watch in self._watches.get(sid, {}).items()}

    def forget(self, sid: int) -> None:
        self._watches.pop(sid, None)

    @staticmethod
    def _tell(sid: int, watch: Watch, mask: int) -> list:
        watch.version += 1
        watch.told = mask & SHOWN
        return [sid, watch.version, watch.told]
