"""ipd: the IP layer.  Packets from nicd go through the pure IP layer
(checks, reassembly, ICMP); TCP segments go to tcpd, and tcpd's segments
go out through the same layer (header, fragmentation) to nicd.
"""
from __future__ import annotations

import time

from proto.ip.gro import coalesce
from proto.ip.layer import IpConfig, IpLayer, IpOutput
from proto.ipc.messages import DeviceReceived, DeviceTransmit, SegmentsReceived, SegmentsTransmit
from proto.ipc.messages import (DatagramsReceived, DatagramsTransmit, IcmpErrorsReceived,
                                PortUnreachable)
from proto.wire.ipv4 import PROTO_TCP, PROTO_UDP, str_to_addr
from services._shell import Service, main


class Ipd(Service):
    name = "ipd"

    def __init__(self, run_dir: str):
        super().__init__(run_dir)
        instance, ip = self.config["instance"], self.config["ip"]
        self.layer = IpLayer(IpConfig(
            # TCP super-segments leave whole: the device (offload) or nicd's software GSO cuts them
            address=str_to_addr(instance["addr"]), mtu=instance["mtu"], tso=True,
            ttl=ip["ttl"],
            reassembly_timeout=ip["reassembly_timeout"], reassembly_max_bytes=ip["reassembly_max_bytes"],
            broadcasts=_broadcasts(instance["addr"], instance.get("prefix", 24))))
        self.gro = bool(ip.get("gro", 1))      # merge a batch's in-order segments (Linux GRO)
        self.counters["gro_merged"] = 0
        self.handlers["dev_rx"] = self.on_device_received
        self.handlers["tcp_tx"] = self.on_segments_transmit
        self.handlers["udp_tx"] = self.on_datagrams_transmit
        self.handlers["udp_unreach"] = self.on_port_unreachable

    def on_device_received(self, identity: bytes, msg: DeviceReceived) -> None:
        out = IpOutput([], [])
        now = time.monotonic()
        packet_in = self.layer.packet_in
        trusted: list[int] = []                       # which of the TCP segments the device vouched for
        udp_trusted: list[int] = []                   # ... and of the UDP datagrams
        if not msg.trusted:
            for packet in msg.payload:
                packet_in(now, packet, out)
        else:
            vouched = set(msg.trusted)
            for i, packet in enumerate(msg.payload):
                before, udp_before = len(out.to_tcp), len(out.to_udp)
                packet_in(now, packet, out)
                if i in vouched:
                    trusted.extend(range(before, len(out.to_tcp)))
                    udp_trusted.extend(range(udp_before, len(out.to_udp)))
        if self.gro and len(out.to_tcp) > 1:
            before = len(out.to_tcp)
            out.to_tcp, trusted = coalesce(out.to_tcp, set(trusted))
            self.counters["gro_merged"] += before - len(out.to_tcp)
        self.flush(out, trusted, udp_trusted)

    def on_segments_transmit(self, identity: bytes, msg: SegmentsTransmit) -> None:
        self._transmit(msg, PROTO_TCP, True, "tcp")

    def on_datagrams_transmit(self, identity: bytes, msg: DatagramsTransmit) -> None:
        # DF clear: a datagram above the MTU leaves in fragments (up to 65,507 bytes)
        self._transmit(msg, PROTO_UDP, False, "udp")

    def _transmit(self, msg: SegmentsTransmit | DatagramsTransmit, protocol: int, df: bool, name: str) -> None:
        """A transport's segments or datagrams out through the IP layer (header, fragments, loopback)."""
        if len(msg.addresses) != len(msg.payload):
            self.count(f"ipc_bad_{'segment' if protocol == PROTO_TCP else 'datagram'}_count")
            return
        out = IpOutput([], [])
        now = time.monotonic()
        send = self.layer.send
        for (src, dst), payload in zip(msg.addresses, msg.payload):
            try:
                send(now, src, dst, protocol, payload, out, df)
            except ValueError:          # a malformed address or an oversized payload from the transport
                self.count(f"drop_bad_{name}_tx")
        self.flush(out, out.looped)

    def on_port_unreachable(self, identity: bytes, msg: PortUnreachable) -> None:
        out = IpOutput([], [])
        now = time.monotonic()
        for quote in msg.quotes:
            if isinstance(quote, bytes):
                self.layer.port_unreachable(now, quote, out)
        self.flush(out)

    def flush(self, out: IpOutput, trusted: list[int] = (), udp_trusted: list[int] = ()) -> None:
        if out.to_device:
            self.send("nicd", DeviceTransmit(payload=tuple(out.to_device)))
        if out.to_tcp:
            self.send("tcpd", SegmentsReceived([[src, dst] for src, dst, _ in out.to_tcp], list(trusted),
                                               payload=tuple(seg for _, _, seg in out.to_tcp)))
        if out.to_udp:
            self.send("udpd", DatagramsReceived([[src, dst, header] for src, dst, header, _ in out.to_udp],
                                                list(udp_trusted), out.udp_looped,
                                                payload=tuple(datagram for *_, datagram in out.to_udp)))
        if out.udp_errors:
            self.send("udpd", IcmpErrorsReceived([list(error) for error in out.udp_errors]))

    def next_deadline(self) -> float | None:
        return self.layer.next_deadline()

    def tick(self, now: float) -> None:
        deadline = self.layer.next_deadline()
        if deadline is not None and deadline <= now:
            out = IpOutput([], [])
            self.layer.expire(now, out)
            self.flush(out)

    def control_stats(self) -> dict:
        return {**self.counters, **self.layer.counters}


def _broadcasts(addr: str, prefix: int) -> tuple[bytes, ...]:
    """The limited broadcast and the stack's subnet's directed broadcast (UDP may receive both)."""
    host_bits = 32 - prefix
    directed = (int.from_bytes(str_to_addr(addr), "big") | ((1 << host_bits) - 1)).to_bytes(4, "big")
    return (b"\xff\xff\xff\xff", directed) if host_bits > 1 else (b"\xff\xff\xff\xff",)


if __name__ == "__main__":
    main(Ipd)
