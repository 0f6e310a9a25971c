"""The `netstack` command: one sub-command per verb of INTERFACE.md."""
from __future__ import annotations

import argparse
import json
import sys

from deploy import control as ctl
from deploy import instance as inst


def cmd_up(args) -> int:
    instance = inst.up(args.name, args.netns, args.dev, args.addr, args.host_addr, args.mtu,
                       args.config, args.set or [], offload=args.offload == "on", access_rule=args.access)
    if instance.note:
        print(f"netstack {instance.name}: {instance.note}", file=sys.stderr)
    print(f"netstack {instance.name}: {instance.addr} on {instance.dev} in namespace {instance.netns} "
          f"(kernel side {instance.host_addr})")
    print(f"NETSTACK_RUN={instance.run_dir}")
    return 0


def cmd_down(args) -> int:
    existed = inst.down(args.name)
    print(f"netstack {args.name}: {'stopped and removed' if existed else 'not running'}")
    return 0


def cmd_status(args) -> int:
    rows = inst.status(args.name)
    if not rows[0]["supervised"]:
        print(f"netstack {args.name}: supervisord is gone, nothing restarts the services "
              f"(netstack down, then up)", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(f"{'SERVICE':8} {'STATE':10} {'PID':>7} {'UPTIME':>9} {'INCARNATION':12} {'RESTARTS':>8}")
        for r in rows:
            uptime = f"{r['uptime']:.1f}s" if r["uptime"] is not None else "-"
            print(f"{r['service']:8} {r['state']:10} {r['pid'] or '-':>7} {uptime:>9} "
                  f"{r['incarnation'] or '-':12} {r['restarts']:>8}")
    return 0 if all(r["state"] == "RUNNING" for r in rows) else 1


def cmd_kill(args) -> int:
    pid = inst.kill(args.name, args.service, args.signal)
    print(f"sent SIG{args.signal.upper().removeprefix('SIG')} to {args.service} (pid {pid})")
    return 0


def _run_dir(name: str):
    return inst.Instance.load(name).run_dir


def cmd_stats(args) -> int:
    run_dir = _run_dir(args.name)
    stats = {}
    for service in ctl.SERVICES:
        try:
            stats[service] = ctl.control(run_dir, service, "stats")
        except ctl.ControlError as exc:
            stats[service] = {"error": str(exc)}
    if args.json:
        print(json.dumps(stats, indent=1, sort_keys=True))
        return 0
    for service, counters in stats.items():
        print(f"{service}:")
        if "error" in counters:
            print(f"    (no answer: {counters['error']})")
            continue
        for key in sorted(counters):
            value = counters[key]
            if value or not key.startswith("drop_"):
                print(f"    {key:32} {value}")
        drops = {k: v for k, v in counters.items() if k.startswith("drop_") and v}
        if not drops:
            print("    (no drops)")
    return 0


def cmd_ss(args) -> int:
    run_dir = _run_dir(args.name)
    if args.udp:
        return _udp_ss(run_dir, args)
    sockets = ctl.control(run_dir, "tcpd", "ss")
    if not args.all:
        sockets = [s for s in sockets if s.get("state") not in ("LISTEN", "CLOSED")]
    if args.json:
        print(json.dumps(sockets, indent=1, sort_keys=True))
        return 0
    print(f"{'State':12} {'Recv-Q':>7} {'Send-Q':>7} {'Local Address:Port':24} {'Peer Address:Port':24}")
    for s in sockets:
        local = ":".join(map(str, s.get("local") or ("*", "*")))
        remote = ":".join(map(str, s.get("remote") or ("*", "*")))
        print(f"{s.get('state', '?'):12} {s.get('recv_q', 0):>7} {s.get('send_q', 0):>7} {local:24} {remote:24}")
        details = []
        if s.get("state") in ("LISTEN", "CLOSED"):
            continue
        for key in ("mss", "rto", "srtt", "rttvar", "cwnd", "ssthresh", "snd_wnd", "rcv_wnd", "retransmissions"):
            if s.get(key) is not None:
                value = s[key]
                details.append(f"{key}:{value:.3f}" if isinstance(value, float) else f"{key}:{value}")
        timers = s.get("timers") or {}
        if timers:
            details.append("timers:(" + ",".join(f"{k},{v:.3f}s" for k, v in sorted(timers.items())) + ")")
        if details:
            print("\t " + " ".join(details))
    return 0


def _udp_ss(run_dir, args) -> int:
    """`ss -u`: udpd's sockets (unconnected ones with -a, as ss shows them), with their drops."""
    sockets = ctl.control(run_dir, "udpd", "ss")
    if not args.all:
        sockets = [s for s in sockets if s["state"] != "UNCONN"]
    if args.json:
        print(json.dumps(sockets, indent=1, sort_keys=True))
        return 0
    print(f"{'State':12} {'Recv-Q':>7} {'Local Address:Port':24} {'Peer Address:Port':24} Drops")
    for s in sockets:
        local, remote = ":".join(map(str, s["local"])), ":".join(map(str, s["remote"]))
        print(f"{s['state']:12} {s['recv_q']:>7} {local:24} {remote:24} {s['drops']}")
    return 0


def cmd_demo(args) -> int:
    from deploy.demo import run_demo
    return run_demo()


def cmd_bench(args) -> int:
    from deploy.bench import run_bench
    return run_bench(quick=args.quick, as_json=args.json, mtu=args.mtu, targets=args.targets, trials=args.trials,
                     workloads=args.workloads)


def cmd_pcap(args) -> int:
    from deploy.trace import pcap_command
    return pcap_command(_run_dir(args.name), args.file, args.count, args.seconds)


def cmd_impair(args) -> int:
    from deploy.trace import impair_command
    return impair_command(_run_dir(args.name), args)


def cmd_trace(args) -> int:
    from deploy.trace import trace_command
    return trace_command(lambda: _run_dir(args.name), args)


def cmd_run(args) -> int:
    from deploy.run import run
    return run(args.name, args.program)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netstack", description="A user-space TCP/IP stack in Python.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--name", default="default", help="instance name (default: default)")
        p.set_defaults(handler=handler)
        return p

    p = command("up", cmd_up, "start an instance")
    p.add_argument("--netns", help="network namespace (default netstack-NAME)")
    p.add_argument("--dev", default="tun0")
    p.add_argument("--addr", default="198.18.0.2/24", help="the stack's address")
    p.add_argument("--host-addr", default="198.18.0.1", help="the kernel side's address")
    p.add_argument("--mtu", type=int, default=1500)
    p.add_argument("--offload", nargs="?", const="on", default="on", choices=("on", "off"),
                   help="virtio-net header with checksum and TCP segmentation offload (64 KiB super-segments): "
                        "on by default when the device takes it; --offload alone means on")
    p.add_argument("--access", default="all", metavar="all|group:NAME|root",
                   help="who may use the stack through libsock: every local user (default, as the kernel), "
                        "members of group NAME, or root only")
    p.add_argument("--config", help="TOML configuration file")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a configuration key")

    command("down", cmd_down, "stop an instance and delete what it created")
    p = command("status", cmd_status, "show the services")
    p.add_argument("--json", action="store_true")
    p = command("kill", cmd_kill, "signal one service (fault injection)")
    p.add_argument("service", choices=ctl.SERVICES)
    p.add_argument("--signal", default="KILL")
    p = command("stats", cmd_stats, "counters per layer, drops by reason")
    p.add_argument("--json", action="store_true")
    p = command("ss", cmd_ss, "list sockets")
    p.add_argument("-a", "--all", action="store_true", help="listening and closed sockets too")
    p.add_argument("-u", "--udp", action="store_true", help="UDP sockets (udpd's) instead of TCP")
    p.add_argument("--json", action="store_true")
    p = command("bench", cmd_bench, "throughput, latency and connection rate beside the kernel's")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quick", action="store_true", help="small sizes, one trial")
    p.add_argument("--mtu", type=int, default=1500)
    p.add_argument("--targets", default="all", help="comma-separated, of netstack,netstack-tso,veth,tun-relay,zmq-chain (default: all)")
    p.add_argument("--trials", type=int, help="trials per figure (default 3, or 1 with --quick)")
    p.add_argument("--workloads", default="all", help="comma-separated, of tcp,udp,scale (default: all)")
    p = command("pcap", cmd_pcap, "write what crosses the device to a pcap file (tcpdump, Wireshark)")
    p.add_argument("file", help="the pcap file to write")
    p.add_argument("--count", type=int, help="stop after N packets")
    p.add_argument("--seconds", type=float, help="stop after S seconds (default: at Ctrl-C)")
    p = command("impair", cmd_impair, "nicd's impairment stage: loss, delay, reordering, duplication")
    p.add_argument("--loss", type=float, metavar="P", help="drop each packet with probability P")
    p.add_argument("--delay", type=float, metavar="MS", help="hold each packet MS milliseconds")
    p.add_argument("--jitter", type=float, metavar="MS", help="vary the delay by up to +-MS milliseconds")
    p.add_argument("--reorder", type=float, metavar="P", help="let the next packet overtake with probability P")
    p.add_argument("--duplicate", type=float, metavar="P", help="send a packet twice with probability P")
    p.add_argument("--direction", choices=("in", "out", "both"),
                   help="in: device to stack, out: stack to device (default both)")
    p.add_argument("--seed", type=int, help="seed of the random choices (repeatable runs)")
    p.add_argument("--off", action="store_true", help="switch the stage off")
    p.add_argument("--json", action="store_true")
    p = command("trace", cmd_trace, "state transitions and segments as they happen; ladder diagrams")
    p.add_argument("--ladder", metavar="FILE.svg", help="draw the connection's ladder diagram to FILE.svg")
    p.add_argument("--conn", metavar="ADDR:PORT", help="only the connection with an end at ADDR:PORT (or PORT)")
    p.add_argument("--pcap", metavar="FILE", help="draw from a capture instead of the running stack")
    p.add_argument("--seconds", type=float, help="stop after S seconds (default: at Ctrl-C)")
    p = command("run", cmd_run, "run a program unchanged on the instance (Python: libsock as socket)")
    p.add_argument("program", nargs=argparse.REMAINDER, help="-- PROGRAM [ARGS...]")
    command("demo", cmd_demo, "an instance, an HTTP server on libsock, curl, the stack's view, teardown")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (inst.InstanceError, ctl.ControlError) as exc:
        print(f"netstack: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
