"""Measure the SYN rate a flood at a backlog-16 listener is answered at (SYN cookies), and how long
genuine kernel clients take meanwhile: `.venv/bin/python -m tests.e2e.flood_rate RATE SECONDS`
(two raw-socket flooders in the namespace, RATE/2 each; prints one JSON line)."""
import json
import sys
import threading
import time

import libsock
from tests.e2e import netns as ns
from tests.e2e.conftest import running_stack, wait_for
from tests.e2e.test_syncookies import _flood, _genuine_clients, _serve, PORT

rate, seconds = int(sys.argv[1]), float(sys.argv[2])
with running_stack() as stack:
    listener = libsock.create_server(("0.0.0.0", PORT), backlog=16)
    stop = threading.Event()
    server = threading.Thread(target=_serve, args=(listener, stop), daemon=True); server.start()
    ns.run(stack.netns, "ip", "link", "set", "tun0", "txqueuelen", "20000")
    before = stack.stats()["tcpd"]
    t0 = time.monotonic()
    floods = [ns.KernelProcess(stack.netns, _flood, stack.addr, PORT, rate // 2, seconds) for _ in range(2)]
    samples = []
    def sample():
        while not stop.is_set():
            samples.append((time.monotonic() - t0, stack.stats()["tcpd"]["syncookies_sent"])); time.sleep(0.5)
    sampler = threading.Thread(target=sample, daemon=True); sampler.start()
    times = ns.in_netns(stack.netns, _genuine_clients, stack.addr, PORT, 8, seconds / 10, timeout=120)
    sent = sum(f.result(60) for f in floods)
    # until tcpd has worked through what is queued
    last = -1
    while True:
        st = stack.stats()["tcpd"]
        n = st["syncookies_sent"] + st.get("drop_syn_queue_full", 0)
        if n == last: break
        last = n; time.sleep(0.5)
    t1 = time.monotonic() - 0.5
    link = json.loads(ns.run(stack.netns, "ip", "-s", "-j", "link", "show", "tun0").stdout)[0]
    print(json.dumps({"offered_per_s": rate, "flood_sent": sent, "seconds": seconds,
                      "cookies_sent": st["syncookies_sent"], "in_segs": st["in_segs"] - before["in_segs"],
                      "answered_per_s_over_flood": round(st["syncookies_sent"] / seconds),
                      "answered_per_s_until_drained": round(st["syncookies_sent"] / (t1 - t0)),
                      "device_tx_dropped": link["stats64"]["tx"]["dropped"],
                      "genuine_max_s": round(max(times), 3), "genuine": [round(t, 3) for t in times],
                      "samples": [(round(a, 2), b) for a, b in samples[:30]]}))
    stop.set(); listener.close()
