"""The netstack command's contract (INTERFACE.md): every option of `up` does what it says,
and a foreseeable fault is one clear line on stderr and a non-zero exit, never a traceback."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

import libsock
from tests.e2e import netns as ns
from tests.e2e.conftest import Stack, connect_or_none, netstack, running_stack, wait_for


def _refused(*args: str) -> str:
    """Run netstack expecting a refusal: its one line of stderr."""
    result = netstack(*args, check=False)
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("args, says", [
    (["--addr", "198.18.0.2/xx"], "bad address"),
    (["--addr", "foo"], "bad address"),
    (["--host-addr", "198.18.0.2"], "both"),
    (["--host-addr", "198.18.9.1"], "not in the stack's network"),
    (["--mtu", "100"], "576"),
    (["--set", "ip.ttl=300"], "ip.ttl"),
    (["--set", "tcp.nope=1"], "unknown configuration key"),
    (["--config", "/nonexistent/netstack.toml"], "cannot read"),
])
def test_up_refuses_bad_arguments_before_making_anything(args, says):
    name = f"t{os.getpid() % 100000}bad"
    try:
        assert says in _refused("up", "--name", name, *args)
        assert not os.path.exists(f"/run/netstack/{name}")
        assert f"netstack-{name}" not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                        text=True).stdout
    finally:
        netstack("down", "--name", name, check=False)


def test_commands_on_an_instance_that_is_not_running():
    name = f"t{os.getpid() % 100000}none"
    for command in (["stats"], ["ss"], ["kill", "tcpd"], ["status"]):
        assert name in _refused(*command, "--name", name)
    down = netstack("down", "--name", name)           # down is idempotent: nothing to stop is not a fault
    assert "not running" in down.stdout


def test_a_name_in_use_is_refused_and_status_says_when_all_five_run(shared_stack):
    assert "already running" in _refused("up", "--name", shared_stack.name)
    status = netstack("status", "--name", shared_stack.name, "--json")          # exit 0: all five run
    assert {row["service"] for row in json.loads(status.stdout)} == {"nicd", "ipd", "tcpd", "timerd", "udpd"}


def _peer_of_one_connection(host: str, port: int) -> tuple[str, int]:
    import socket
    with socket.create_server((host, port)) as listener:
        conn, peer = listener.accept()
        with conn:
            conn.sendall(b"k")
            conn.recv(1)
        return peer


def test_every_option_of_up(tmp_path):
    """--netns, --dev, --addr, --host-addr, --mtu and --config, all away from their defaults."""
    config = tmp_path / "netstack.toml"
    config.write_text("[ip]\nttl = 33\n")
    netns = f"t-{os.getpid() % 100000}-cli"
    with running_stack("--netns", netns, "--dev", "tun7", "--addr", "198.19.7.2/28", "--host-addr", "198.19.7.1",
                       "--mtu", "9000", "--config", str(config)) as stack:
        assert stack.netns == f"netstack-{stack.name}"      # conftest's guess: correct it
        stack = Stack(name=stack.name, netns=netns, run_dir=stack.run_dir, addr="198.19.7.2", host="198.19.7.1")
        link = subprocess.run(["ip", "-n", netns, "-j", "addr", "show", "dev", "tun7"], capture_output=True,
                              text=True, check=True)
        (device,) = json.loads(link.stdout)
        assert device["mtu"] == 9000
        assert [(a["local"], a["prefixlen"]) for a in device["addr_info"] if a["family"] == "inet"] == \
            [("198.19.7.1", 28)]
        server = ns.KernelProcess(netns, _peer_of_one_connection, stack.host, 7400)
        sock = wait_for(lambda: connect_or_none((stack.host, 7400), timeout=5), 10, 0.05, "the kernel server")
        with sock:
            assert sock.getsockname()[0] == "198.19.7.2"
            assert sock.getsockopt(libsock.IPPROTO_TCP, libsock.TCP_MAXSEG) == 9000 - 40 - 12     # less the timestamps, as Linux
            sock.recv(1)
            sock.send(b"k")
        assert server.result(10)[0] == "198.19.7.2"
        with open(os.path.join(stack.run_dir, "config.json")) as f:
            assert json.load(f)["ip"]["ttl"] == 33                # the file's key reached the services
    assert netns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
