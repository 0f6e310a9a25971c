"""nicd: the device driver.  Owns the TUN device and moves whole IP packets
between it and ipd, reading every packet that is ready per wake-up.

The device is persistent (`netstack up` creates it), so a restarted nicd
re-attaches to the same device with its address and routes intact.
"""
from __future__ import annotations

import fcntl
import os
import time

import pytun

from proto.impair import Impairment, ImpairSettings
from proto.ipc.messages import DeviceReceived, DeviceTransmit
from proto.wire import pcap
from proto.wire.gso import segment_tcp
from proto.wire.vnet import complete_checksum, complete_tcp_checksum, from_device, to_device
from services._shell import Service, main

READ_BATCH = 256
TUNSETOFFLOAD = 0x400454D0
TUN_F_CSUM, TUN_F_TSO4 = 0x01, 0x02
MAX_PACKET = 65535
IMPAIR_COUNTERS = ("dropped", "delayed", "duplicated", "reordered")


class Capture:
    """A pcap file being written (`netstack pcap`): every packet that crosses the
    device, both ways, until `limit` packets or the monotonic `deadline`."""

    def __init__(self, ident: str, path: str, limit: int | None, deadline: float | None):
        self.ident, self.path, self.limit, self.deadline = ident, path, limit, deadline
        self.file = open(path, "wb", buffering=1 << 20)
        self.file.write(pcap.file_header())
        self.packets = 0
        self.bytes = 0

    def write(self, packets) -> bool:
        """Record packets with the time now; True once the count limit is reached."""
        if self.limit is not None:
            packets = packets[:self.limit - self.packets]
        stamp = time.time()
        write, header = self.file.write, pcap.record_header
        for packet in packets:
            write(header(stamp, len(packet)))
            write(packet)
            self.bytes += len(packet)
        self.packets += len(packets)
        return self.limit is not None and self.packets >= self.limit

    def close(self, reason: str) -> dict:
        self.file.close()
        return {"id": self.ident, "path": self.path, "running": False, "packets": self.packets,
                "bytes": self.bytes, "reason": reason}


class Nicd(Service):
    name = "nicd"

    def __init__(self, run_dir: str):
        super().__init__(run_dir)
        instance = self.config["instance"]
        self.mtu = instance["mtu"]
        self.offload = bool(instance.get("offload"))
        flags = pytun.IFF_TUN | pytun.IFF_NO_PI | (pytun.IFF_VNET_HDR if self.offload else 0)
        self.tun = pytun.TunTapDevice(name=instance["dev"], flags=flags)
        self.fd = self.tun.fileno()
        if self.offload:
            # checksums and TCPv4 segmentation offloaded: 64 KiB super-segments both ways
            fcntl.ioctl(self.fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4)
        fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        self.watch(self.fd, self.on_device_readable)
        self.handlers["dev_tx"] = self.on_transmit
        self.counters.update(rx_packets=0, rx_bytes=0, tx_packets=0, tx_bytes=0, tx_errors=0, rx_batches=0,
                             gso_packets=0)
        self.counters.update({"impair_" + name: 0 for name in IMPAIR_COUNTERS})
        self.capture: Capture | None = None         # `netstack pcap`: None costs one test per batch
        self.captures_done: dict[str, dict] = {}
        self.impair: Impairment | None = None       # `netstack impair`: None when off
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
            trusted = []
            if self.offload:
                packets, partial = zip(*map(from_device, packets))
                if self.impair is None:
                    trusted = [i for i, csum in enumerate(partial) if csum]
                else:               # the impairment stage reorders and holds: complete them instead
                    packets = [complete_checksum(p, *c) if c else p for p, c in zip(packets, partial)]
            self.counters["rx_packets"] += len(packets)
            self.counters["rx_bytes"] += sum(map(len, packets))
            self.counters["rx_batches"] += 1
            if self.capture is not None:
                captured = packets
                if trusted:         # as they would stand on a wire: checksums complete
                    captured = [complete_checksum(p, *c) if c else p for p, c in zip(packets, partial)]
                if self.capture.write(captured):
                    self._end_capture("count")
            if self.impair is not None:
                now, offer = time.monotonic(), self.impair.offer
                packets = [out for packet in packets for out in offer(now, packet, "in")]
                if not packets:
                    return
            self.send("ipd", DeviceReceived(trusted, payload=tuple(packets)))

    def on_transmit(self, identity: bytes, msg: DeviceTransmit) -> None:
        packets = msg.payload
        if not self.offload:          # software GSO: cut TCP super-segments as the kernel cuts for a plain NIC
            mtu = self.mtu
            if any(len(packet) > mtu for packet in packets):
                cut = [piece for packet in packets for piece in segment_tcp(packet, mtu)]
                self.counters["gso_packets"] += len(cut) - len(packets)
                packets = cut
        if self.impair is not None:
            now, offer = time.monotonic(), self.impair.offer
            packets = [out for packet in packets for out in offer(now, packet, "out")]
        self.transmit(packets)

    def transmit(self, packets) -> None:
        if self.capture is not None:
            # with offloads, tcpd leaves TCP checksums to the device: the capture shows them done
            captured = [complete_tcp_checksum(p) for p in packets] if self.offload else packets
            if self.capture.write(captured):
                self._end_capture("count")
        write, writev, fd = os.write, os.writev, self.fd
        offload, mtu = self.offload, self.mtu
        for packet in packets:
            try:
                if offload:
                    writev(fd, to_device(packet, mtu))
                else:
                    write(fd, packet)
                self.counters["tx_packets"] += 1
                self.counters["tx_bytes"] += len(packet)
            except OSError:
                self.counters["tx_errors"] += 1

    # -- held packets and the capture's time limit -----------------------------

    def next_deadline(self) -> float | None:
        deadline = None
        if self.impair is not None:
            deadline = self.impair.next_release()
        if self.capture is not None and self.capture.deadline is not None:
            deadline = self.capture.deadline if deadline is None else min(deadline, self.capture.deadline)
        return deadline

    def tick(self, now: float) -> None:
        if self.impair is not None:
            self._deliver(self.impair.release(now))
        if self.capture is not None and self.capture.deadline is not None and now >= self.capture.deadline:
            self._end_capture("seconds")

    def _deliver(self, released: list[tuple[str, bytes]]) -> None:
        if not released:
            return
        inward = [packet for direction, packet in released if direction == "in"]
        if inward:
            self.send("ipd", DeviceReceived(payload=tuple(inward)))
        if len(inward) < len(released):
            self.transmit([packet for direction, packet in released if direction == "out"])

    # -- control: netstack pcap --------------------------------------------------

    def control_pcap_start(self, path: str, count: int | None = None, seconds: float | None = None) -> dict:
        if self.capture is not None:
            raise RuntimeError(f"a capture is already running ({self.capture.path}, "
                               f"{self.capture.packets} packets so far)")
        if not os.path.isabs(path):
            raise ValueError(f"the capture file must be an absolute path, not {path!r}")
        if count is not None and count < 1 or seconds is not None and seconds <= 0:
            raise ValueError("count and seconds must be positive")
        ident = f"{self.incarnation}-{len(self.captures_done) + 1}"
        deadline = None if seconds is None else time.monotonic() + seconds
        self.capture = Capture(ident, path, count, deadline)
        return self.control_pcap_status(ident)

    def control_pcap_status(self, id: str | None = None) -> dict:
        capture = self.capture
        if capture is not None and id in (None, capture.ident):
            return {"id": capture.ident, "path": capture.path, "running": True, "packets": capture.packets,
                    "bytes": capture.bytes, "reason": None}
        if id in self.captures_done:
            return self.captures_done[id]
        if id is None:
            return {"id": None, "running": False}
        raise LookupError(f"no capture {id} in this nicd (incarnation {self.incarnation}): "
                          "nicd restarted, the file holds what was written before")

    def control_pcap_stop(self, id: str | None = None) -> dict:
        if self.capture is not None and id in (None, self.capture.ident):
            self._end_capture("stopped")
        return self.control_pcap_status(id)

    def _end_capture(self, reason: str) -> None:
        capture, self.capture = self.capture, None
        result = capture.close(reason)
        self.captures_done[capture.ident] = result
        self.count("pcap_packets", capture.packets)

    # -- control: netstack impair ------------------------------------------------

    def control_impair(self, loss: float = 0.0, delay: float = 0.0, jitter: float = 0.0, reorder: float = 0.0,
                       duplicate: float = 0.0, direction: str = "both", seed: int | None = None) -> dict:
        settings = ImpairSettings(float(loss), float(delay), float(jitter), float(reorder), float(duplicate),
                                  direction)
        if self.impair is None:
            self.impair = Impairment(settings, seed)
        else:
            self.impair.configure(settings)
            if seed is not None:
                self.impair.random.seed(seed)
        return self.control_impair_show()

    def control_impair_off(self) -> dict:
        if self.impair is not None:
            impair, self.impair = self.impair, None
            self._deliver(impair.flush())
            for name in IMPAIR_COUNTERS:
                self.counters["impair_" + name] += impair.counters[name]
        return self.control_impair_show()

    def control_impair_show(self) -> dict:
        impair = self.impair
        return {"on": impair is not None,
                "settings": impair.settings.as_dict() if impair else None,
                "describe": impair.settings.describe() if impair else "off",
                "held": impair.pending() if impair else 0,
                "counters": {name: value for name, value in self.control_stats().items()
                             if name.startswith("impair_")}}

    def control_stats(self) -> dict:
        stats = dict(self.counters)
        if self.impair is not None:
            for name in IMPAIR_COUNTERS:
                stats["impair_" + name] += self.impair.counters[name]
        return stats

    def close(self) -> None:
        if self.capture is not None:
            self._end_capture("nicd stopped")
        super().close()
        self.tun.close()


if __name__ == "__main__":
    main(Nicd)
