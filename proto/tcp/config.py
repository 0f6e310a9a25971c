"""TCP settings: defaults from the seed and Linux, all settable (INTERFACE.md)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class TcpConfig:
    mss: int = 1460                 # our MSS (MTU - 40), sent in SYN
    rcvbuf: int = 262144
    sndbuf: int = 262144
    max_backlog: int = 128
    mem_max: int = 256 << 20          # like tcp_mem's hard limit: bytes all receive queues may hold
    max_syn_backlog: int = 1024       # like tcp_max_syn_backlog: half-open children a listener keeps at most
    syncookies: int = 1               # like tcp_syncookies: 1 when a SYN queue is full, 2 always, 0 never
    ephemeral_ports: tuple[int, int] = (32768, 60999)
    connect_timeout: float = 75.0
    rto_initial: float = 1.0
    rto_min: float = 1.0
    rto_max: float = 64.0
    max_retries: int = 15
    msl: float = 30.0
    fin_wait2_timeout: float = 60.0
    delayed_ack: float = 0.2
    keepalive_time: float = 7200.0
    keepalive_interval: float = 75.0
    keepalive_probes: int = 9
    challenge_ack_limit: int = 1000   # per second, like tcp_challenge_ack_limit
    # additions
    syn_retries: int = 6              # like tcp_syn_retries (the connect timer usually ends it first)
    synack_retries: int = 5           # like tcp_synack_retries: a passive child gives up after this
    initial_cwnd_segments: int = 10   # RFC 6928 / Linux
    timestamps: int = 1               # offer and accept RFC 7323 timestamps (Linux tcp_timestamps)
    quickacks: int = 16               # at most this many quick ACKs at the start and after idle (delack.py)
    rack: int = 1                     # RACK time-based loss detection (RFC 8985) beside the dupack rule,
                                      # with SACK (Linux tcp_recovery=1)
    congestion: str = "cubic"         # the congestion control of new connections (congestion.py)
    gso_max_size: int = 0             # >0: the device does TSO; send super-segments of up to this many
                                      # payload bytes, cut at the MSS by the device (0: off)

    @classmethod
    def from_mapping(cls, d: dict) -> "TcpConfig":
        """Build from INTERFACE.md's keys without the "tcp." prefix.

        `ephemeral_ports` may be a "lo-hi" string or a pair.  Unknown keys raise
        ValueError, so that a typo in a config file does not pass silently.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in d.items():
            key = key[4:] if key.startswith("tcp.") else key
            if key not in fields:
                raise ValueError(f"unknown TCP setting {key!r}")
            default = getattr(cls, key)
            if key == "ephemeral_ports":
                if isinstance(value, str):
                    lo, _, hi = value.partition("-")
                    value = (int(lo), int(hi))
                else:
                    value = (int(value[0]), int(value[1]))
                if not 1 <= value[0] <= value[1] <= 65535:
                    raise ValueError(f"bad ephemeral port range {value!r}")
            elif isinstance(default, bool):
                value = bool(value)
            elif isinstance(default, int):
                value = int(value)
            elif isinstance(default, float):
                value = float(value)
            kwargs[key] = value
        return cls(**kwargs)
