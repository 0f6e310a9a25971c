"""Running things on the kernel's side of an instance: inside its namespace."""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import subprocess
import traceback

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def enter_netns(netns: str) -> None:
    """Move the calling process (it must have one thread) into `netns`."""
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {netns}: {os.strerror(err)}")
    finally:
        os.close(fd)


def _child(netns, fn, args, kwargs, queue):
    try:
        enter_netns(netns)
        queue.put(("ok", fn(*args, **kwargs)))
    except BaseException as exc:          # hand every failure back to the test
        queue.put(("error", (exc, traceback.format_exc())))


class KernelProcess:
    """A forked process in the namespace running fn(*args); `result()` waits for it."""

    def __init__(self, netns: str, fn, *args, **kwargs):
        ctx = multiprocessing.get_context("fork")
        self.queue = ctx.Queue()
        self.process = ctx.Process(target=_child, args=(netns, fn, args, kwargs, self.queue), daemon=True)
        self.process.start()

    def result(self, timeout: float = 60.0):
        try:
            status, value = self.queue.get(timeout=timeout)
        except Exception:
            self.kill()
            raise TimeoutError(f"kernel-side process did not finish within {timeout} s") from None
        self.process.join(5)
        if status == "error":
            exc, text = value
            raise AssertionError(f"kernel-side process failed:\n{text}") from exc
        return value

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)


def in_netns(netns: str, fn, *args, timeout: float = 60.0, **kwargs):
    """Run fn in a child process inside netns and return its result (exceptions re-raised)."""
    return KernelProcess(netns, fn, *args, **kwargs).result(timeout)


def run(netns: str, *cmd: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", netns, *cmd], capture_output=True, text=True,
                          timeout=timeout, check=check)


def popen(netns: str, *cmd: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", netns, *cmd], **kwargs)
