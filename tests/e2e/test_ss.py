"""`netstack ss --json` during a transfer and after the close."""
from __future__ import annotations

import threading

from tests.e2e import netns as ns
from tests.e2e.conftest import connect_or_none, wait_for

PORT = 7600


def _slow_reader(host: str, port: int, ready_to_read) -> int:
    """Kernel side: accept, then read nothing until told (its window fills), then everything."""
    import socket
    with socket.create_server((host, port)) as listener:
        listener.settimeout(30)
        conn, _ = listener.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        ready_to_read.wait(30)
        total = 0
        with conn:
            while data := conn.recv(65536):
                total += len(data)
    return total


def test_ss_shows_transfer_then_time_wait_then_nothing(shared_stack):
    import multiprocessing
    go = multiprocessing.get_context("fork").Event()
    reader = ns.KernelProcess(shared_stack.netns, _slow_reader, shared_stack.host, PORT, go)
    sock = wait_for(lambda: connect_or_none((shared_stack.host, PORT)), 10, 0.05, "the kernel reader")
    size = 8 << 20
    sender = threading.Thread(target=sock.sendall, args=(b"z" * size,))
    sender.start()
    local_port = sock.getsockname()[1]

    def ours():
        return next((s for s in shared_stack.ss() if s.get("local") and s["local"][1] == local_port), None)

    # data in flight (the retransmission timer) or held by the reader's closed window (persist)
    busy = wait_for(lambda: (s := ours()) and s["send_q"] > 0 and {"retransmit", "persist"} & set(s["timers"])
                    and s, 10, 0.05, "the connection with data queued")
    assert busy["state"] == "ESTABLISHED"
    assert busy["remote"] == [shared_stack.host, PORT]
    for key in ("rto", "srtt", "cwnd", "ssthresh", "snd_wnd", "rcv_wnd", "retransmissions"):
        assert key in busy
    go.set()
    sender.join(60)
    sock.close()                              # we close first: the active closer
    assert reader.result(60) == size
    closing = wait_for(lambda: (s := ours()) and s["state"] == "TIME_WAIT" and s, 10, 0.02, "TIME_WAIT")
    assert "time_wait" in closing["timers"] and 0 < closing["timers"]["time_wait"] <= 1.0    # 2 x msl 0.5
    wait_for(lambda: ours() is None, 5, 0.05, "the 2MSL timer to end TIME_WAIT")
