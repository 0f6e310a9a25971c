"""One running stack: its run directory, namespace, device and supervisord.

`up` and `down` are here; both are idempotent where the contract says so and
fail with `InstanceError` (one clear line) on a foreseeable fault.
"""
from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from deploy import control as ctl
from proto.config import ConfigError, build_config
from services import access
from services.procs import pid_alive

RUN_ROOT = Path(os.environ.get("NETSTACK_RUN_ROOT", "/run/netstack"))
TEMPLATE = Path(__file__).with_name("supervisord.conf.tmpl")
UP_TIMEOUT = 10.0
TX_QUEUE_LEN = 10000


class InstanceError(RuntimeError):
    """A foreseeable fault, reported to the user as one line."""


@dataclass
class Instance:
    name: str
    netns: str
    dev: str = "tun0"
    addr: str = "198.18.0.2"
    prefix: int = 24
    host_addr: str = "198.18.0.1"
    mtu: int = 1500
    netns_created: bool = False
    offload: bool = False           # the device carries virtio-net headers with TSO / checksum offload
    note: str = ""                  # what up has to say beyond the usual (a fallback)

    @property
    def run_dir(self) -> Path:
        return RUN_ROOT / self.name

    @classmethod
    def load(cls, name: str) -> "Instance":
        path = RUN_ROOT / name / "instance.json"
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise InstanceError(f"instance {name!r} is not running ({RUN_ROOT / name} does not exist)") from None
        except PermissionError:
            raise InstanceError(f"instance {name!r} is root's: this command needs root "
                                f"(applications use it through netstack run and libsock)") from None

    def save(self) -> None:
        _root_only(self.run_dir / "instance.json", json.dumps(asdict(self)))


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise InstanceError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def netns_exists(netns: str) -> bool:
    return Path("/run/netns", netns).exists()


def _root_only(path: Path, text: str) -> None:
    """Write a file of the run directory only root may read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with open(fd, "w") as f:
        f.write(text)


def running_run_dir(name: str) -> Path:
    """An instance's run directory, for any user (instance.json is root's): `netstack run`."""
    run_dir = RUN_ROOT / name
    if not run_dir.is_dir():
        raise InstanceError(f"instance {name!r} is not running ({run_dir} does not exist)")
    return run_dir


def supervisord_pid(run_dir: Path) -> int | None:
    try:
        pid = int((run_dir / "supervisord.pid").read_text())
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def check_can_run() -> None:
    if os.geteuid() != 0:
        raise InstanceError("netstack up needs root (it creates a namespace and a TUN device)")
    if not os.path.exists("/dev/net/tun"):
        raise InstanceError("/dev/net/tun is missing: this kernel or container has no TUN support")
    if shutil.which("ip") is None:
        raise InstanceError("the 'ip' command (iproute2) is not installed")


def _check_addresses(addr: str, host_addr: str, mtu: int) -> tuple[str, int]:
    """--addr (prefix /24 unless given), --host-addr and --mtu, checked before anything is made."""
    try:
        interface = ipaddress.IPv4Interface(addr if "/" in addr else addr + "/24")
        host = ipaddress.IPv4Address(host_addr)
    except ValueError as exc:
        raise InstanceError(f"bad address: {exc}") from None
    if host == interface.ip:
        raise InstanceError(f"--addr and --host-addr are both {host}: the stack and the kernel need one each")
    if host not in interface.network:
        raise InstanceError(f"--host-addr {host} is not in the stack's network {interface.network}")
    if not 576 <= mtu <= 65535:
        raise InstanceError(f"--mtu {mtu}: IPv4 hosts need at least 576 (RFC 1122), a TUN device at most 65535")
    return str(interface.ip), interface.network.prefixlen


# nicd's way of opening the device, tried in the instance's namespace before nicd starts
_PROBE = """
import fcntl, sys, pytun
tun = pytun.TunTapDevice(name=sys.argv[1], flags=pytun.IFF_TUN | pytun.IFF_NO_PI | pytun.IFF_VNET_HDR)
fcntl.ioctl(tun.fileno(), 0x400454D0, 0x01 | 0x02)       # TUNSETOFFLOAD: TUN_F_CSUM | TUN_F_TSO4
"""


def _add_device(netns: str, dev: str, offload: bool) -> bool:
    """The TUN device, with virtio-net headers and offloads when asked and the kernel can;
    returns whether it has them."""
    _ip("-n", netns, "tuntap", "add", "dev", dev, "mode", "tun", *(["vnet_hdr"] if offload else []))
    if not offload:
        return False
    probe = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", _PROBE, dev],
                           capture_output=True, text=True)
    if probe.returncode == 0:
        return True
    _ip("-n", netns, "tuntap", "del", "dev", dev, "mode", "tun")
    _ip("-n", netns, "tuntap", "add", "dev", dev, "mode", "tun")
    return False


def up(name: str, netns: str | None, dev: str, addr: str, host_addr: str, mtu: int,
       config_file: str | None, overrides: list[str], offload: bool = True, access_rule: str = "all") -> Instance:
    check_can_run()
    try:
        gate = access.Gate(access_rule)
    except access.RuleError as exc:
        raise InstanceError(str(exc)) from None
    address, prefix = _check_addresses(addr, host_addr, mtu)
    instance = Instance(name=name, netns=netns or f"netstack-{name}", dev=dev, addr=address,
                        prefix=prefix, host_addr=host_addr, mtu=mtu)
    try:
        toml_text = Path(config_file).read_text() if config_file else None
        config = build_config(toml_text, overrides)
    except OSError as exc:
        raise InstanceError(f"cannot read {config_file}: {exc.strerror}") from None
    except ConfigError as exc:
        raise InstanceError(str(exc)) from None
    run_dir = instance.run_dir
    if run_dir.exists():
        if supervisord_pid(run_dir):
            raise InstanceError(f"instance {name!r} is already running (netstack down --name {name} stops it)")
        shutil.rmtree(run_dir)          # left by a crash: start afresh
    # any user may pass through (not list) the run directory to public/, whose mode follows the
    # access rule (access.py): the call endpoints and what libsock reads (incarnations/,
    # supervisord.pid, tcpd.lineage, dns.json); everything else is root's alone.  The old paths
    # of incarnations/ and supervisord.pid are links into public/.
    run_dir.mkdir(parents=True, mode=0o700)
    os.chmod(run_dir, 0o711)
    (run_dir / "logs").mkdir(mode=0o700)
    _root_only(run_dir / "access", access_rule + "\n")
    public = access.make_public_dir(run_dir, gate)
    (public / "incarnations").mkdir(mode=0o755)
    os.chmod(public / "incarnations", 0o755)
    (run_dir / "incarnations").symlink_to(f"{access.PUBLIC_DIR}/incarnations")
    (run_dir / "supervisord.pid").symlink_to(f"{access.PUBLIC_DIR}/supervisord.pid")
    try:
        if not netns_exists(instance.netns):
            _ip("netns", "add", instance.netns)
            instance.netns_created = True
        instance.save()
        _ip("-n", instance.netns, "link", "set", "lo", "up")
        if _ip("-n", instance.netns, "link", "show", dev, check=False).returncode == 0:
            raise InstanceError(f"device {dev} already exists in namespace {instance.netns}")
        instance.offload = _add_device(instance.netns, dev, offload)
        if offload and not instance.offload:
            instance.note = "the device does not take offloads here: plain packets (as --offload off)"
        instance.save()
        _ip("-n", instance.netns, "addr", "add", f"{host_addr}/{instance.prefix}", "dev", dev)
        # the device's queue towards nicd is its receive ring: 500 packets (the TUN default)
        # overflow when hundreds of connections burst at once
        _ip("-n", instance.netns, "link", "set", dev, "mtu", str(mtu), "txqueuelen", str(TX_QUEUE_LEN), "up")
        config["instance"] = {"name": name, "dev": dev, "addr": address, "mtu": mtu, "netns": instance.netns,
                              "offload": instance.offload, "prefix": prefix, "access": access_rule}
        _root_only(run_dir / "config.json", json.dumps(config, indent=1))
        (public / "dns.json").write_text(json.dumps(config.get("dns", {})))     # libsock's resolver
        os.chmod(public / "dns.json", 0o644)
        common = "\n".join([
            "autostart=true", "autorestart=true", "startsecs=0", "startretries=1000000",
            "stopsignal=TERM", "stopwaitsecs=3", "redirect_stderr=true",
            "stdout_logfile={run}/logs/%(program_name)s.log", "stdout_logfile_maxbytes=10MB",
            "stdout_logfile_backups=1",
        ]).format(run=run_dir)
        conf = TEMPLATE.read_text().format(name=name, run=run_dir, python=sys.executable,
                                           ip=shutil.which("ip"), netns=instance.netns, common=common)
        (run_dir / "supervisord.conf").write_text(conf)
        os.chmod(run_dir / "supervisord.conf", 0o600)
        # supervisord through run_supervisord below: it restarts a dead service at once
        started = subprocess.run([sys.executable, "-m", "deploy.instance", "supervisord",
                                  "-c", str(run_dir / "supervisord.conf")], capture_output=True, text=True)
        if started.returncode != 0:
            raise InstanceError(f"supervisord failed to start: {started.stderr.strip() or started.stdout.strip()}")
        wait_until_serving(run_dir, UP_TIMEOUT)
        os.chmod(public / "supervisord.pid", 0o644)      # (supervisord runs with umask 077)
    except BaseException:
        down(name, quiet=True)
        raise
    return instance


def wait_until_serving(run_dir: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    missing = list(ctl.SERVICES)
    while time.monotonic() < deadline:
        missing = [s for s in ctl.SERVICES if not _answers(run_dir, s)]
        if not missing:
            return
        time.sleep(0.05)
    raise InstanceError(f"services did not start within {timeout:g} s: {', '.join(missing)} "
                        f"(see {run_dir}/logs/)")


def _answers(run_dir: Path, service: str, timeout: float = 0.5) -> bool:
    if not (run_dir / f"{service}.sock").exists():
        return False
    try:
        ctl.control(run_dir, service, "status", timeout=timeout)
        return True
    except ctl.ControlError:
        return False


def incarnations(run_dir: Path, service: str) -> list[tuple[str, int, float]]:
    try:
        lines = (run_dir / "incarnations" / service).read_text().split()
    except FileNotFoundError:
        return []
    return [(lines[i], int(lines[i + 1]), float(lines[i + 2])) for i in range(0, len(lines) - 2, 3)]


def _suspended(pid: int) -> bool:
    """Stopped by a signal (SIGSTOP): alive, but serving nothing until SIGCONT."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except (OSError, IndexError):
        return False


def status(name: str) -> list[dict]:
    """Each service as supervisord sees it; with supervisord gone, as the services' own start
    records and /proc see them (they may well run on, unsupervised)."""
    instance = Instance.load(name)
    run_dir = instance.run_dir
    infos = {}
    supervised = bool(supervisord_pid(run_dir))
    if supervised:
        try:
            infos = {info["name"]: info for info in ctl.supervisor(run_dir).supervisor.getAllProcessInfo()}
        except OSError:
            infos = {}
    rows = []
    now = time.time()
    for service in ctl.SERVICES:
        starts = incarnations(run_dir, service)
        if supervised:
            info = infos.get(service, {})
            state, pid, started = info.get("statename", "UNKNOWN"), info.get("pid") or None, info.get("start")
        else:
            _, pid, started = starts[-1] if starts else (None, None, None)
            state = "RUNNING" if pid and pid_alive(pid) else "EXITED"
        if state == "RUNNING" and pid and _suspended(pid):
            state = "SUSPENDED"
        rows.append({
            "service": service, "state": state, "pid": pid if state != "EXITED" else None,
            "uptime": round(now - started, 1) if state == "RUNNING" and started else None,
            "incarnation": starts[-1][0] if starts else None,
            "restarts": max(0, len(starts) - 1),
            "supervised": supervised,
        })
    return rows


def kill(name: str, service: str, signame: str) -> int:
    if service not in ctl.SERVICES:
        raise InstanceError(f"unknown service {service!r} (one of {', '.join(ctl.SERVICES)})")
    sig = signame.upper().removeprefix("SIG")
    if not hasattr(signal, "SIG" + sig):
        raise InstanceError(f"unknown signal {signame!r}")
    row = next(r for r in status(name) if r["service"] == service)
    if not row["pid"]:
        raise InstanceError(f"{service} is not running ({row['state']})")
    os.kill(row["pid"], getattr(signal, "SIG" + sig))
    return row["pid"]


def _stack_pids(run_dir: Path) -> list[int]:
    """Service processes of this instance still alive (checked by their command line)."""
    pids = []
    for service in ctl.SERVICES:
        for _, pid, _ in incarnations(run_dir, service):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if str(run_dir).encode() in cmdline and pid_alive(pid):
                pids.append(pid)
    return pids


def down(name: str, quiet: bool = False) -> bool:
    """Stop everything of the instance and delete what `up` created. True if anything was there."""
    run_dir = RUN_ROOT / name
    try:
        instance = Instance.load(name)
    except InstanceError:
        instance = None
    if not run_dir.exists():
        return False
    pid = supervisord_pid(run_dir)
    for stopped in _stack_pids(run_dir):      # a service stopped by SIGSTOP (`netstack kill --signal
        try:                                   # STOP`) would hold supervisord's stop for stopwaitsecs
            os.kill(stopped, signal.SIGCONT)
        except ProcessLookupError:
            pass
    if pid:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        _wait_gone([pid], 10.0)
    leftovers = _stack_pids(run_dir)
    for sig in (signal.SIGCONT, signal.SIGTERM):
        for leftover in leftovers:
            try:
                os.kill(leftover, sig)
            except ProcessLookupError:
                pass
    if leftovers and not _wait_gone(leftovers, 3.0):
        for leftover in _stack_pids(run_dir):
            os.kill(leftover, signal.SIGKILL)
        _wait_gone(leftovers, 3.0)
    if instance is not None:
        if netns_exists(instance.netns):
            _ip("-n", instance.netns, "link", "del", instance.dev, check=False)
            if instance.netns_created:
                _ip("netns", "del", instance.netns, check=False)
    shutil.rmtree(run_dir, ignore_errors=True)
    return True


def _wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(pid_alive(pid) for pid in pids):
            return True
        time.sleep(0.02)
    return False


def run_supervisord(argv: list[str]) -> None:
    """supervisord, restarting a dead service the moment it dies.

    Stock supervisord polls with a 1 s timeout, is not woken by SIGCHLD (PEP 475
    retries the poll), and spawns the replacement only at the top of the loop
    iteration after the one that reaped the dead child: a killed service stayed
    down about 1.1 s.  Here a SIGCHLD wakes the poll (signal.set_wakeup_fd on a
    pipe the loop polls), and the process groups transition right after each
    reap (EXITED -> STARTING, and with startsecs=0 -> RUNNING), so the restart
    follows the death within milliseconds.  No other behaviour changes.
    """
    from supervisor import supervisord as sd
    from supervisor.medusa import asyncore_25 as asyncore

    class Wakeup:
        """The read end of the signal wake-up pipe, as a supervisord dispatcher."""

        def __init__(self, fd: int):
            self.fd = fd

        def readable(self) -> bool:
            return True

        def writable(self) -> bool:
            return False

        def handle_read_event(self) -> None:
            try:
                while os.read(self.fd, 4096):
                    pass
            except BlockingIOError:
                pass

        def handle_error(self) -> None:
            pass

        def close(self) -> None:
            pass

    original_runforever, original_reap = sd.Supervisor.runforever, sd.Supervisor.reap

    def runforever(self):
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        asyncore.socket_map[read_fd] = Wakeup(read_fd)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        return original_runforever(self)

    def reap(self, once=False, recursionguard=0):
        original_reap(self, once, recursionguard)
        if recursionguard == 0:
            for _ in range(2):          # EXITED -> STARTING, then STARTING -> RUNNING (startsecs=0)
                for group in list(self.process_groups.values()):
                    group.transition()

    sd.Supervisor.runforever, sd.Supervisor.reap = runforever, reap
    sd.main(argv)


if __name__ == "__main__":
    if sys.argv[1:2] == ["supervisord"]:
        run_supervisord(sys.argv[2:])
