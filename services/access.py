"""Who may use an instance (`netstack up --access all|group:NAME|root`), and who a caller is.

Applications reach tcpd and udpd through their public endpoints, RUN/public/<service>.sock;
every other endpoint (RUN/<service>.sock: segments, packets, timer fires, control) is the
services' own, mode 0600 and root's, so the filesystem refuses any other user.  The rule
sets the public directory's and sockets' modes (all: 0755 / 0666; group:NAME: 0750 / 0660,
group NAME; root: 0700 / 0600), so that the kernel refuses a user the rule leaves out at
connect(); the service checks the rule again on every message (Gate), with the caller's
credentials from the kernel.

Identity: ZeroMQ reads SO_PEERCRED when it accepts an ipc connection and hands the peer's
uid, gid and pid to every message it delivers from it (the "Peer-Address" property,
"<address>:<uid>:<gid>:<pid>").  That is the kernel's word, taken at connect(); the caller
cannot choose it.  (ZAP would give the same through a second socket and a handshake per
connection; a credentials handshake of our own would be only as good as SO_PEERCRED under
it.)  libsock names its channels p<pid>.<random> / n<pid>.<random>: a public message whose
name does not carry the pid the kernel gives is refused, so the pid tcpd keeps per socket
(owners.py) is the kernel's.
"""
from __future__ import annotations

import grp
import os
import pwd
import re
from pathlib import Path
from typing import NamedTuple

ROOT_RULE, ALL_RULE = "root", "all"
PRIVILEGED_PORTS = 1024      # binding below needs uid 0 (Linux's ip_unprivileged_port_start)
PUBLIC_DIR = "public"
_IDENTITY = re.compile(rb"[pn]([0-9]{1,10})\.[0-9a-f]{1,64}\Z")
_GROUPS_CACHE_MAX = 1000


class Creds(NamedTuple):
    uid: int
    gid: int
    pid: int


ROOT = Creds(0, 0, 0)        # a caller on a service's own endpoint (only root can reach it)


class RuleError(ValueError):
    pass


def parse_rule(text: str) -> tuple[str, str | None]:
    """("all", None), ("root", None) or ("group", NAME); RuleError for anything else."""
    if text in (ALL_RULE, ROOT_RULE):
        return text, None
    if text.startswith("group:") and len(text) > 6:
        return "group", text[6:]
    raise RuleError(f"--access {text!r}: expected all, root or group:NAME")


def group_id(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise RuleError(f"--access group:{name}: no such group") from None


def peer_creds(address: str | None) -> Creds | None:
    """The credentials in a message's Peer-Address ("...:uid:gid:pid"), None if absent."""
    if not address:
        return None
    parts = address.rsplit(":", 3)
    try:
        return Creds(int(parts[1]), int(parts[2]), int(parts[3]))
    except (IndexError, ValueError):
        return None


def identity_pid(identity: bytes) -> int | None:
    """The pid in a libsock channel's name (p<pid>.<hex>, n<pid>.<hex>), None if not one."""
    found = _IDENTITY.match(identity)
    return int(found.group(1)) if found else None


class Gate:
    """The instance's rule, checked against a caller's kernel credentials."""

    def __init__(self, rule: str):
        self.rule = rule
        self.kind, self.group = parse_rule(rule)
        self.gid = group_id(self.group) if self.group is not None else None
        self._members: dict[tuple[int, int], bool] = {}

    def admits(self, creds: Creds) -> bool:
        if creds.uid == 0 or self.kind == "all":
            return True
        if self.kind == "root":
            return False
        key = (creds.uid, creds.gid)
        member = self._members.get(key)
        if member is None:
            if len(self._members) >= _GROUPS_CACHE_MAX:
                self._members.clear()
            member = self._members[key] = self.gid in _groups_of(creds.uid, creds.gid)
        return member

    def modes(self) -> tuple[int, int, int]:
        """The public directory's mode, its sockets' mode and their group."""
        if self.kind == "all":
            return 0o755, 0o666, 0
        if self.kind == "group":
            return 0o750, 0o660, self.gid
        return 0o700, 0o600, 0


def _groups_of(uid: int, gid: int) -> set[int]:
    """The uid's groups as /etc/group says (SO_PEERCRED carries only the primary gid; the
    filesystem, which checks the process's own groups, is the first gate)."""
    try:
        return set(os.getgrouplist(pwd.getpwuid(uid).pw_name, gid))
    except KeyError:
        return {gid}


def open_endpoint(path: Path, gate: Gate) -> None:
    """Give a public socket its mode and group by the rule (after bind)."""
    _, sock_mode, gid = gate.modes()
    os.chown(path, 0, gid)
    os.chmod(path, sock_mode)


def make_public_dir(run_dir: Path, gate: Gate) -> Path:
    """RUN/public with its mode and group by the rule (netstack up)."""
    folder = run_dir / PUBLIC_DIR
    dir_mode, _, gid = gate.modes()
    folder.mkdir(mode=0o700, exist_ok=True)
    os.chown(folder, 0, gid)
    os.chmod(folder, dir_mode)
    return folder
