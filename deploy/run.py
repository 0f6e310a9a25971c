"""`netstack run [--name N] -- PROGRAM [ARGS...]`: a program, unchanged, on an instance.

The program replaces this process (exec): its signals, stdin, stdout and exit
status are its own.  NETSTACK_RUN names the instance; for a Python program,
PYTHONPATH starts with libsock/_hook (whose sitecustomize makes libsock stand in
for `socket` before the program's first import), then the project, then the
program's own PYTHONPATH, then this interpreter's site-packages (so a Python of
the same version finds pyzmq and msgpack).
"""
from __future__ import annotations

import os
import shutil
import site
import sys
from pathlib import Path

from deploy import instance as inst

PROJECT = Path(__file__).resolve().parent.parent
HOOK = PROJECT / "libsock" / "_hook"


def environment(run_dir: Path, env: dict[str, str]) -> dict[str, str]:
    env = dict(env)
    env["NETSTACK_RUN"] = str(run_dir)
    paths = [str(HOOK), str(PROJECT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    paths.extend(p for p in site.getsitepackages() if os.path.isdir(p))
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def tcpd_alive(run_dir: Path) -> bool:
    from libsock._rpc import Stack
    return Stack(str(run_dir))._read_tcpd() is not None


def run(name: str, argv: list[str]) -> int:
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise inst.InstanceError("run: no program given (netstack run [--name N] -- PROGRAM [ARGS...])")
    run_dir = inst.running_run_dir(name)
    from libsock._rpc import public_endpoint
    try:
        public_endpoint(run_dir, "tcpd")        # a user the access rule leaves out hears so
    except PermissionError as exc:
        raise inst.InstanceError(exc.strerror) from None
    if not tcpd_alive(run_dir):
        raise inst.InstanceError(f"instance {name!r} has no tcpd running (netstack status --name {name})")
    program = shutil.which(argv[0])
    if program is None:
        raise inst.InstanceError(f"run: {argv[0]}: command not found")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(program, argv, environment(run_dir, os.environ))
    return 127      # (not reached)
