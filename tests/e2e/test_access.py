"""Who may use the stack (issue 15): `netstack up --access all|group:NAME|root`, identity from
the kernel (SO_PEERCRED), sockets that belong to their process, ports below 1024 for root.

The unprivileged programs run as a user the test makes (`useradd`, removed after) and as
`nobody`.  They start as root and drop to the user before their first call: the interpreter
lives under /root, which another user cannot enter, so everything they need is imported first.
"""
from __future__ import annotations

import contextlib
import errno
import grp
import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

import libsock
from tests.e2e import netns as ns
from tests.e2e import peers
from tests.e2e.conftest import running_stack, wait_for

PROJECT = Path(__file__).resolve().parents[2]
USER, GROUP = "t-nsuser", "t-nsgrp"

PRELUDE = """
import errno, json, os, socket as kernel, sys, threading
import zmq
import libsock
from libsock import _rpc
from channel.frames import send_frames
from proto.ipc import codec
from proto.ipc.messages import Call, SegmentsReceived
os.setgroups(json.loads(os.environ["T_GROUPS"]))
os.setgid(int(os.environ["T_GID"]))
os.setuid(int(os.environ["T_UID"]))
RUN = os.environ["NETSTACK_RUN"]
def errno_of(fn, *args):
    try:
        fn(*args)
    except OSError as exc:
        return exc.errno
    return 0
"""

# --access all: an ordinary user serves, connects, and is kept out of what is not its own
ORDINARY = PRELUDE + """
out = {"uid": os.getuid()}
server = libsock.create_server(("0.0.0.0", 8080))
print("listening", flush=True)
conn, _ = server.accept()                               # a kernel client
conn.sendall(conn.recv(100).upper())
conn.close()
with libsock.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10) as c:     # a kernel server
    c.sendall(b"ping")
    out["kernel_said"] = c.recv(100).decode()
out["bind_80"] = errno_of(libsock.socket().bind, ("0.0.0.0", 80))
out["bind_udp_53"] = errno_of(libsock.socket(libsock.AF_INET, libsock.SOCK_DGRAM).bind, ("0.0.0.0", 53))
out["bind_8081"] = errno_of(libsock.socket().bind, ("0.0.0.0", 8081))
victim = json.loads(os.environ["T_VICTIM"])             # a socket of another process, by its id
out["other_getsockname"] = errno_of(_rpc.stack().call, "getsockname", victim, [], None)
out["other_close"] = errno_of(_rpc.stack().call, "close", victim, [], None)
out["service_endpoints"] = {}
for name in ("tcpd", "udpd", "ipd", "nicd", "timerd"):
    with kernel.socket(kernel.AF_UNIX) as raw:
        out["service_endpoints"][name] = errno_of(raw.connect, f"{RUN}/{name}.sock")
out["list_run_dir"] = errno_of(os.listdir, RUN)
out["read_private"] = {name: errno_of(open, f"{RUN}/{name}")
                       for name in ("config.json", "instance.json", "access", "supervisord.conf", "tcp.journal")}
# through the public endpoint: a segment as ipd would send it, and a call under another pid's name
context = zmq.Context.instance()
for name, message in ((f"p{os.getpid()}.abcdef", SegmentsReceived([[bytes(4), bytes(4)]], payload=(bytes(20),))),
                      ("p1.abcdef", Call(1, "getsockname", victim, [], None))):
    forged = context.socket(zmq.DEALER)
    forged.setsockopt(zmq.ROUTING_ID, name.encode())
    forged.setsockopt(zmq.LINGER, 1000)
    forged.connect(f"ipc://{RUN}/public/tcpd.sock")
    send_frames(forged, codec.encode(message))
    forged.close()
print(json.dumps(out), flush=True)
"""

# a user's connection across a tcpd kill: libsock must read the new tcpd's lineage (public/)
ACROSS_A_KILL = PRELUDE + """
with libsock.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10) as c:
    c.sendall(b"before")
    assert c.recv(100) == b"before"
    print("connected", flush=True)
    sys.stdin.readline()                        # tcpd is killed and back meanwhile
    c.sendall(b"after")
    print(c.recv(100).decode(), flush=True)
"""

# the command line as this user (its interpreter is root's to start here: PRELUDE drops to the user)
CLI = "import json, sys; from deploy import cli, run" + PRELUDE + """
sys.exit(cli.main(json.loads(sys.argv[1])))
"""

REFUSED = PRELUDE + """
try:
    libsock.create_connection((sys.argv[1], 9), timeout=5)
except OSError as exc:
    print(json.dumps({"errno": exc.errno, "type": type(exc).__name__, "text": str(exc)}), flush=True)
else:
    print(json.dumps({"errno": 0}), flush=True)
"""


@contextlib.contextmanager
def _user():
    """A new user in a new group (useradd, groupadd), deleted afterwards."""
    for cmd in (["userdel", USER], ["groupdel", GROUP]):          # a leftover of a killed run
        subprocess.run(cmd, capture_output=True)
    subprocess.run(["groupadd", GROUP], check=True, capture_output=True)
    try:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "-G", GROUP, USER],
                       check=True, capture_output=True)
        try:
            yield pwd.getpwnam(USER)
        finally:
            subprocess.run(["userdel", USER], capture_output=True)
    finally:
        subprocess.run(["groupdel", GROUP], capture_output=True)


def _as(user: pwd.struct_passwd, program: str, run_dir: str, *args: str, env: dict | None = None,
        **popen) -> subprocess.Popen:
    groups = os.getgrouplist(user.pw_name, user.pw_gid)
    environment = {**os.environ, "NETSTACK_RUN": run_dir, "PYTHONPATH": str(PROJECT), "T_UID": str(user.pw_uid),
                   "T_GID": str(user.pw_gid), "T_GROUPS": json.dumps(groups), **(env or {})}
    return subprocess.Popen([sys.executable, "-c", program, *args], env=environment, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/", **popen)


def _refused(user, stack) -> dict:
    proc = _as(user, REFUSED, stack.run_dir, stack.host)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return json.loads(out)


def _kernel_echo_server(host: str, port: int) -> None:
    import socket
    with socket.create_server((host, port)) as listener:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(conn.recv(100).upper())


def _kernel_client(addr: str, port: int) -> bytes:
    import socket
    with socket.create_connection((addr, port), timeout=10) as s:
        s.sendall(b"hello")
        return s.recv(100)


def test_an_ordinary_user_serves_and_connects_and_touches_nothing_else():
    with _user() as user, running_stack() as stack:
        victim = libsock.create_server(("0.0.0.0", 9000))          # root's, in this process
        kernel_server = ns.KernelProcess(stack.netns, _kernel_echo_server, stack.host, 7700)
        proc = _as(user, ORDINARY, stack.run_dir, stack.host, "7700", env={"T_VICTIM": json.dumps(victim._sid)})
        try:
            assert proc.stdout.readline().strip() == "listening", proc.stderr.read()
            # netstack ss: the listener is the user's, as ss -p shows
            listening = next(s for s in stack.ss() if s["state"] == "LISTEN" and s["local"][1] == 8080)
            assert listening["owners"] == [[proc.pid, user.pw_uid]]
            assert ns.in_netns(stack.netns, _kernel_client, stack.addr, 8080) == b"HELLO"
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        kernel_server.result(10)
        found = json.loads(out)
        assert found["uid"] == user.pw_uid and found["kernel_said"] == "PING"
        assert found["bind_80"] == errno.EACCES and found["bind_udp_53"] == errno.EACCES
        assert found["bind_8081"] == 0
        assert found["other_getsockname"] == errno.EBADF and found["other_close"] == errno.EBADF
        assert found["service_endpoints"] == dict.fromkeys(("tcpd", "udpd", "ipd", "nicd", "timerd"), errno.EACCES)
        assert found["list_run_dir"] == errno.EACCES
        assert set(found["read_private"].values()) == {errno.EACCES}, found["read_private"]
        # as INTERFACE.md says: everything in the run directory is root's but public/ (the
        # endpoints and what libsock reads there: incarnations, supervisord.pid, lineage, dns.json)
        run = Path(stack.run_dir)
        opened = [p.name for p in run.iterdir() if not p.is_symlink() and p.name != "public"
                  and os.stat(p).st_mode & 0o077]          # (what is inside logs/ is behind its 0700)
        assert opened == [], opened
        # root's listener was not touched: it still accepts
        assert victim.getsockname()[1] == 9000
        assert ns.in_netns(stack.netns, _kernel_client_connects, stack.addr, 9000)
        victim.accept()[0].close()
        victim.close()
        # the forged segment and the call under another pid's name were refused, and counted
        stats = wait_for(lambda: (t := stack.stats()["tcpd"]).get("ipc_refused_op", 0) >= 1
                         and t.get("ipc_refused_identity", 0) >= 1 and t, 5, 0.05, "the refusals counted")
        assert stats["ebadf_not_owner"] >= 2


def _kernel_client_connects(addr: str, port: int) -> bool:
    import socket
    with socket.create_connection((addr, port), timeout=10):
        return True


def test_group_and_root_rules_refuse_with_eacces_naming_the_instance():
    nobody = pwd.getpwnam("nobody")
    with _user() as member:
        with running_stack(f"--access=group:{GROUP}") as stack:
            assert oct(os.stat(Path(stack.run_dir) / "public").st_mode & 0o777) == "0o750"
            assert os.stat(Path(stack.run_dir) / "public").st_gid == grp.getgrnam(GROUP).gr_gid
            refused = _refused(nobody, stack)
            assert refused["errno"] == errno.EACCES and refused["type"] == "PermissionError", refused
            assert stack.run_dir in refused["text"] and f"group:{GROUP}" in refused["text"], refused
            # a member gets through to the network (nobody listens on port 9: refused by the kernel)
            assert _refused(member, stack)["errno"] == errno.ECONNREFUSED
            # and keeps its connection across a tcpd kill (it reads the new tcpd's lineage)
            echo = ns.KernelProcess(stack.netns, peers.echo_server, stack.host, 7701)
            proc = _as(member, ACROSS_A_KILL, stack.run_dir, stack.host, "7701", stdin=subprocess.PIPE)
            try:
                assert proc.stdout.readline().strip() == "connected", proc.stderr.read()
                stack.cli("kill", "tcpd")
                out, err = proc.communicate("go\n", timeout=60)
                assert proc.returncode == 0 and out.strip() == "after", err
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                echo.kill()
        with running_stack("--access=root") as stack:
            refused = _refused(member, stack)
            assert refused["errno"] == errno.EACCES and "--access root" in refused["text"], refused
            assert (Path(stack.run_dir) / "public" / "tcpd.lineage").exists()
            # the command line says the same in one line; root's commands say they are root's
            for command in (["run", "--name", stack.name, "--", "/bin/true"], ["status", "--name", stack.name]):
                proc = _as(member, CLI, stack.run_dir, json.dumps(command))
                out, err = proc.communicate(timeout=60)
                assert proc.returncode == 1 and len(err.strip().splitlines()) == 1, (command, err)
                assert ("--access root" if command[0] == "run" else "is root's") in err, (command, err)


def test_up_refuses_an_unknown_rule_or_group():
    from tests.e2e.conftest import netstack
    for rule in ("everyone", "group:t-no-such-group"):
        result = netstack("up", "--name", "t-badaccess", "--access", rule, check=False)
        assert result.returncode != 0 and "--access" in result.stderr and "Traceback" not in result.stderr
    assert not Path("/run/netstack/t-badaccess").exists()


@pytest.fixture(autouse=True)
def _no_leftover_user():
    yield
    with contextlib.suppress(KeyError):
        pwd.getpwnam(USER)
        pytest.fail(f"user {USER} left behind")
