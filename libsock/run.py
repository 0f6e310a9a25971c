"""Run a Python program unchanged on the stack: libsock stands in for `socket`.

    python -m libsock.run app.py ARGS...
    python -m libsock.run -m module ARGS...

`install()` puts libsock in sys.modules as `socket` before the program's first
import, so everything that imports socket after it (asyncio, socketserver,
http.client, urllib, selectors' users, third-party libraries) makes its AF_INET
sockets on the stack.  select, selectors and asyncio need no stand-in: a libsock
socket's fileno() is a real descriptor whose readiness follows it
(libsock/_readiness.py), so the kernel's select/poll/epoll serve both kinds.
AF_UNIX sockets stay the kernel's.  ssl.SSLContext.wrap_socket on a libsock socket
runs TLS over it through ssl.MemoryBIO (libsock/_tls.py).  `netstack run` does the same for a program
it starts, through libsock/_hook/sitecustomize.py on PYTHONPATH.
"""
from __future__ import annotations

import os
import runpy
import sys

USAGE = "usage: python -m libsock.run [-m module | program.py] [args...]"


def install() -> None:
    """libsock is `socket` from now on (modules imported before keep what they imported), and
    ssl's wrap_socket takes libsock sockets (libsock/_tls.py).  ssl itself is imported first,
    so that its SSLSocket stays the kernel's (TLS over AF_UNIX sockets still works)."""
    import libsock
    from libsock import _tls
    _tls.patch()
    sys.modules["socket"] = libsock


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help") or (argv[0] == "-m" and len(argv) < 2):
        print(USAGE, file=sys.stderr)
        raise SystemExit(2)
    install()
    if argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]     # runpy puts the module's path in argv[0]
        sys.path.insert(0, os.getcwd())     # as python -m does
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(argv)
        sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))    # as python app.py does
        runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
