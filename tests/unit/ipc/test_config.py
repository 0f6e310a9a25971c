from __future__ import annotations

import pytest

from proto.config import DEFAULTS, ConfigError, build_config, parse_port_range


def test_defaults_are_the_seed_and_linux_values():
    config = build_config()
    assert config["tcp"]["connect_timeout"] == 75.0
    assert (config["tcp"]["rto_min"], config["tcp"]["rto_max"]) == (1.0, 64.0)
    assert config["tcp"]["keepalive_time"] == 7200.0
    assert config["ip"]["ttl"] == 64


def test_file_then_set_later_wins():
    config = build_config("[tcp]\nmsl = 5\nmax_backlog = 10\n", ["tcp.msl=0.25"])
    assert config["tcp"]["msl"] == 0.25
    assert config["tcp"]["max_backlog"] == 10
    assert DEFAULTS["tcp"]["msl"] == 30.0           # the defaults are not touched


@pytest.mark.parametrize("overrides, text", [
    (["tcp.nope=1"], "unknown configuration key"),
    (["tcp.msl"], "expected section.key=value"),
    (["tcp.max_backlog=1.5"], "is not a int"),
    (["tcp.msl=-1"], "negative"),
    (["tcp.ephemeral_ports=9-3"], "out of range"),
    (["ip.ttl=300"], "outside 1..255"),
    (["ip.ttl=0"], "outside 1..255"),
    (["tcp.rcvbuf=100"], "outside"),
])
def test_bad_overrides_are_refused(overrides, text):
    with pytest.raises(ConfigError, match=text):
        build_config(None, overrides)


def test_every_default_is_within_its_limits():
    assert build_config(None, []) == build_config(None, [f"{section}.{key}={value}" for section, keys in
                                                         DEFAULTS.items() for key, value in keys.items()])


def test_bad_toml_is_refused():
    with pytest.raises(ConfigError):
        build_config("[tcp\n")


def test_port_range():
    assert parse_port_range("32768-60999") == (32768, 60999)
