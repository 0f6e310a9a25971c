"""The configuration keys of INTERFACE.md: defaults, a TOML file, `--set` overrides.

Pure: the caller reads the file and hands its text in.
"""
from __future__ import annotations

import tomllib
from typing import Any

from proto.tcp.congestion import CONTROLS

DEFAULTS: dict[str, dict[str, Any]] = {
    "tcp": {
        "connect_timeout": 75.0,
        "rto_initial": 1.0,
        "rto_min": 1.0,
        "rto_max": 64.0,
        "max_retries": 15,
        "msl": 30.0,
        "fin_wait2_timeout": 60.0,
        "delayed_ack": 0.2,
        "keepalive_time": 7200.0,
        "keepalive_interval": 75.0,
        "keepalive_probes": 9,
        "rcvbuf": 262144,
        "sndbuf": 262144,
        "max_backlog": 128,
        "max_syn_backlog": 1024,
        "mem_max": 256 << 20,
        "syncookies": 1,
        "ephemeral_ports": "32768-60999",
        "timer_slack": 0.01,
        "congestion": "cubic",
        "quickacks": 16,
        "timestamps": 1,
        "durable": 1,           # connections survive tcpd's death (services/tcp/store.py)
        "rack": 1,
    },
    "limits": {
        "sockets_per_process": 1024,     # as RLIMIT_NOFILE's soft default: EMFILE beyond
    },
    "ip": {
        "ttl": 64,
        "reassembly_timeout": 30.0,
        "reassembly_max_bytes": 4194304,
        "gro": 1,
    },
    "dns": {
        "servers": [],          # DNS servers reached over the stack, e.g. ["198.18.0.1"]
        "search": [],           # domains tried for a name without a dot, as resolv.conf's search
        "timeout": 5.0,         # seconds per query (resolv.conf's options timeout)
        "attempts": 2,          # rounds over the servers (options attempts)
    },
}


# keys whose values have bounds beyond "not negative" (inclusive)
LIMITS: dict[tuple[str, str], tuple[float, float]] = {
    ("ip", "ttl"): (1, 255),
    ("ip", "gro"): (0, 1),
    ("tcp", "max_retries"): (1, 255),
    ("tcp", "keepalive_probes"): (1, 127),          # TCP_KEEPCNT's range on Linux
    ("tcp", "max_backlog"): (1, 65535),
    ("tcp", "max_syn_backlog"): (1, 1 << 20),
    ("tcp", "mem_max"): (1 << 16, 1 << 40),
    ("tcp", "rcvbuf"): (2304, 1 << 30),
    ("tcp", "sndbuf"): (4608, 1 << 30),
    ("tcp", "rto_min"): (0.001, 3600),
    ("tcp", "rto_initial"): (0.001, 3600),
    ("tcp", "rto_max"): (0.001, 86400),
    ("tcp", "timer_slack"): (0, 1),
    ("tcp", "quickacks"): (0, 16),
    ("tcp", "timestamps"): (0, 1),
    ("tcp", "durable"): (0, 1),
    ("tcp", "rack"): (0, 1),
    ("dns", "timeout"): (0.001, 30),
    ("dns", "attempts"): (1, 5),
    ("tcp", "syncookies"): (0, 2),
    ("limits", "sockets_per_process"): (1, 1 << 20),
}


class ConfigError(ValueError):
    pass


def _coerce(section: str, key: str, value: Any) -> Any:
    if section not in DEFAULTS or key not in DEFAULTS[section]:
        raise ConfigError(f"unknown configuration key {section}.{key}")
    default = DEFAULTS[section][key]
    if isinstance(default, list):
        return _coerce_list(section, key, value)
    try:
        if isinstance(default, float):
            value = float(value)
        elif isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            value = int(value)
        else:
            value = str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{section}.{key}: {value!r} is not a {type(default).__name__}") from None
    if isinstance(value, (int, float)) and value < 0:
        raise ConfigError(f"{section}.{key}: {value!r} is negative")
    low, high = LIMITS.get((section, key), (None, None))
    if low is not None and not low <= value <= high:
        raise ConfigError(f"{section}.{key}: {value!r} is outside {low}..{high}")
    if key == "ephemeral_ports":
        parse_port_range(value)
    if key == "congestion" and value not in CONTROLS:
        raise ConfigError(f"tcp.congestion: {value!r} is not one of {', '.join(sorted(CONTROLS))}")
    return value


def _coerce_list(section: str, key: str, value: Any) -> list[str]:
    """A list of strings: a TOML array, or on the command line a comma-separated string
    (`--set dns.servers=198.18.0.1,198.18.0.3`; an empty string is the empty list) or array
    (`--set 'dns.servers=["198.18.0.1"]'`)."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = tomllib.loads(f"value = {value}")["value"]
        except tomllib.TOMLDecodeError:
            raise ConfigError(f"{section}.{key}: {value!r} is not a list") from None
    elif isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{section}.{key}: {value!r} is not a list of strings")
    if key == "servers":
        for item in value:
            parts = item.split(".")
            if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts):
                raise ConfigError(f"{section}.{key}: {item!r} is not an IPv4 address")
    return value


def parse_port_range(text: str) -> tuple[int, int]:
    try:
        low, high = (int(part) for part in text.split("-"))
    except ValueError:
        raise ConfigError(f"tcp.ephemeral_ports: {text!r} is not LOW-HIGH") from None
    if not 1 <= low <= high <= 65535:
        raise ConfigError(f"tcp.ephemeral_ports: {text!r} is out of range")
    return low, high


def build_config(toml_text: str | None = None, overrides: list[str] = ()) -> dict[str, dict[str, Any]]:
    """Defaults, then the TOML file, then each `section.key=value`; later wins."""
    config = {section: {k: list(v) if isinstance(v, list) else v for k, v in values.items()}
              for section, values in DEFAULTS.items()}
    if toml_text:
        try:
            data = tomllib.loads(toml_text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file: {exc}") from None
        for section, values in data.items():
            if not isinstance(values, dict):
                raise ConfigError(f"configuration file: {section} is not a [section]")
            for key, value in values.items():
                config.setdefault(section, {})[key] = _coerce(section, key, value)
    for item in overrides:
        name, sep, value = item.partition("=")
        section, dot, key = name.strip().partition(".")
        if not sep or not dot:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        config[section][key] = _coerce(section, key, value.strip())
    return config
