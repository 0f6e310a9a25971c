"""Talking to a running instance: control requests to its services and
supervisord's XML-RPC, used by the netstack command and by the tests."""
from __future__ import annotations

import itertools
import xmlrpc.client
from pathlib import Path
from typing import Any

import zmq

from proto.ipc import codec
from proto.ipc.messages import Control, ControlReply

SERVICES = ("nicd", "ipd", "tcpd", "timerd", "udpd")
_ids = itertools.count(1)


class ControlError(RuntimeError):
    pass


def control(run_dir: str | Path, service: str, what: str, timeout: float = 2.0, **args: Any) -> Any:
    """Ask `service` of the instance at run_dir; ControlError if it does not answer in time."""
    context = zmq.Context.instance()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(f"ipc://{Path(run_dir) / (service + '.sock')}")
        request_id = next(_ids)
        sock.send_multipart(codec.encode(Control(request_id, what, args)))
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        remaining_ms = int(timeout * 1000)
        while poller.poll(remaining_ms):
            reply = codec.decode(sock.recv_multipart())
            if isinstance(reply, ControlReply) and reply.id == request_id:
                if not reply.ok:
                    raise ControlError(f"{service}: {reply.value}")
                return reply.value
        raise ControlError(f"{service} did not answer within {timeout:g} s")
    finally:
        sock.close(0)


def supervisor(run_dir: str | Path):
    """A proxy to the instance's supervisord (XML-RPC over its unix socket)."""
    from supervisor.xmlrpc import SupervisorTransport
    transport = SupervisorTransport(None, None, f"unix://{Path(run_dir) / 'supervisor.sock'}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
