"""nicd: the device driver.  Owns the TUN device and moves whole IP packets
between it and ipd, reading every packet that is ready per wake-up.

The device is persistent (`netstack up` creates it), so a restarted nicd
re-attaches to the same device with its address and routes intact.
"""
from __future__ import annotations

import fcntl
import os

import pytun

from proto.ipc.messages import DeviceReceived, DeviceTransmit
from services._shell import Service, main

READ_BATCH = 256
MAX_PACKET = 65535


class Nicd(Service):
    name = "nicd"

    def __init__(self, run_dir: str):
        super().__init__(run_dir)
        device = self.config["instance"]["dev"]
        self.tun = pytun.TunTapDevice(name=device, flags=pytun.IFF_TUN | pytun.IFF_NO_PI)
        self.fd = self.tun.fileno()
        fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        self.poller.register(self.fd, 1)  # zmq.POLLIN
        self.fd_handlers[self.fd] = self.on_device_readable
        self.handlers["dev_tx"] = self.on_transmit
        self.counters.update(rx_packets=0, rx_bytes=0, tx_packets=0, tx_bytes=0, tx_errors=0, rx_batches=0)
        self.announce("ipd")

    def on_device_readable(self) -> None:
        packets = []
        read = os.read
        for _ in range(READ_BATCH):
            try:
                packets.append(read(self.fd, MAX_PACKET))
            except BlockingIOError:
                break
        if packets:
            self.counters["rx_packets"] += len(packets)
            self.counters["rx_bytes"] += sum(map(len, packets))
            self.counters["rx_batches"] += 1
            self.send("ipd", DeviceReceived(payload=tuple(packets)))

    def on_transmit(self, identity: bytes, msg: DeviceTransmit) -> None:
        write = os.write
        for packet in msg.payload:
            try:
                write(self.fd, packet)
                self.counters["tx_packets"] += 1
                self.counters["tx_bytes"] += len(packet)
            except OSError:
                self.counters["tx_errors"] += 1

    def close(self) -> None:
        super().close()
        self.tun.close()


if __name__ == "__main__":
    main(Nicd)
