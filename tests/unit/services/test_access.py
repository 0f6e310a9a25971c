"""The access rule and a caller's credentials (services/access.py)."""
import pytest

from services import access
from services.access import Creds, Gate, RuleError


def test_rules_parse_and_bad_ones_are_refused():
    assert access.parse_rule("all") == ("all", None)
    assert access.parse_rule("root") == ("root", None)
    assert access.parse_rule("group:netstack") == ("group", "netstack")
    for bad in ("", "everyone", "group:", "uid:0"):
        with pytest.raises(RuleError):
            access.parse_rule(bad)
    with pytest.raises(RuleError):
        Gate("group:t-no-such-group-here")


def test_credentials_come_from_the_peer_address_and_must_match_the_channel_name():
    assert access.peer_creds("localhost:1000:100:4242") == Creds(1000, 100, 4242)
    assert access.peer_creds(":0:0:1") == Creds(0, 0, 1)
    assert access.peer_creds(None) is None and access.peer_creds("localhost") is None
    assert access.identity_pid(b"p4242.0a1b2c3d4e5f") == 4242
    assert access.identity_pid(b"n17.ab") == 17
    for other in (b"ipd", b"p.ab", b"p12", b"p12.xyz", b"q12.ab", b"\x00k\x8bEg"):
        assert access.identity_pid(other) is None


def test_the_gate_admits_by_rule_root_always():
    user, root = Creds(1000, 1000, 5), Creds(0, 0, 6)
    assert Gate("all").admits(user) and Gate("all").admits(root)
    assert not Gate("root").admits(user) and Gate("root").admits(root)
    assert Gate("all").modes() == (0o755, 0o666, 0) and Gate("root").modes() == (0o700, 0o600, 0)
    group = Gate("group:root")                  # gid 0: a group every system has
    assert group.modes() == (0o750, 0o660, 0)
    assert group.admits(root) and group.admits(Creds(1000, 0, 7))      # primary group
    assert not group.admits(Creds(65534, 65534, 8))                    # nobody is not in root
