"""Put on PYTHONPATH by `netstack run`: libsock stands in for `socket` before the
program's first import (deploy/run.py).  A sitecustomize found further along the
path (the distribution's) still runs, after."""
import importlib
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
try:
    from libsock.run import install
    install()
except ImportError as exc:
    sys.stderr.write(f"netstack run: this Python ({sys.executable}) cannot import libsock: {exc} "
                     "(use the project's .venv/bin/python, or a venv with the project installed)\n")
    raise SystemExit(1)

_me = sys.modules.pop("sitecustomize")
_path = sys.path[:]
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
try:
    importlib.import_module("sitecustomize")
except ImportError:
    sys.modules["sitecustomize"] = _me       # none further along: the import ends with this one
finally:
    sys.path[:] = _path
