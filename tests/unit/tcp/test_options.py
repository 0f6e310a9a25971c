"""setsockopt / getsockopt with Linux's values and errors; the config mapping."""
import errno

import pytest

from proto.tcp.config import TcpConfig

from .factory import ACK, SYN, closed, established, listening

SOL_SOCKET, IPPROTO_TCP = 1, 6


def test_defaults():
    eng, sid, peer = closed()
    g = lambda level, name: peer.call("getsockopt", sid, level, name)
    assert g(SOL_SOCKET, 2) == 0            # SO_REUSEADDR
    assert g(SOL_SOCKET, 3) == 1            # SO_TYPE = SOCK_STREAM
    assert g(SOL_SOCKET, 4) == 0            # SO_ERROR
    assert g(SOL_SOCKET, 9) == 0            # SO_KEEPALIVE
    assert g(SOL_SOCKET, 13) == (0, 0)      # SO_LINGER
    assert g(SOL_SOCKET, 7) == 262144 and g(SOL_SOCKET, 8) == 262144
    assert g(SOL_SOCKET, 30) == 0           # SO_ACCEPTCONN
    assert g(IPPROTO_TCP, 1) == 0           # TCP_NODELAY
    assert g(IPPROTO_TCP, 2) == 536         # TCP_MAXSEG before connecting (Linux)
    assert g(IPPROTO_TCP, 4) == 7200 and g(IPPROTO_TCP, 5) == 75 and g(IPPROTO_TCP, 6) == 9


def test_buffer_sizes_doubled_and_clamped_like_linux():
    eng, sid, peer = closed()
    peer.call("setsockopt", sid, SOL_SOCKET, 8, 1000)
    assert peer.call("getsockopt", sid, SOL_SOCKET, 8) == 2304
    peer.call("setsockopt", sid, SOL_SOCKET, 7, 10)
    assert peer.call("getsockopt", sid, SOL_SOCKET, 7) == 4608
    peer.call("setsockopt", sid, SOL_SOCKET, 8, 65536)
    assert peer.call("getsockopt", sid, SOL_SOCKET, 8) == 131072
    peer.call("setsockopt", sid, SOL_SOCKET, 8, 10 ** 9)
    assert peer.call("getsockopt", sid, SOL_SOCKET, 8) == 2 * 212992


def test_rcvbuf_decides_window_scale():
    eng, sid, peer = closed()
    peer.call("setsockopt", sid, SOL_SOCKET, 8, 16384)      # 32 KiB: no shift needed
    assert peer.error_of("connect", sid, "198.18.0.1", 80) == errno.EINPROGRESS
    assert peer.take_one().options.window_scale == 0


def test_linger_values():
    eng, sid, peer = closed()
    peer.call("setsockopt", sid, SOL_SOCKET, 13, (1, 5))
    assert peer.call("getsockopt", sid, SOL_SOCKET, 13) == (1, 5)
    peer.call("setsockopt", sid, SOL_SOCKET, 13, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    assert peer.call("getsockopt", sid, SOL_SOCKET, 13) == (1, 0)
    assert peer.error_of("setsockopt", sid, SOL_SOCKET, 13, 5) == errno.EINVAL


def test_unknown_options_enoprotoopt():
    eng, sid, peer = closed()
    assert peer.error_of("setsockopt", sid, SOL_SOCKET, 999, 1) == errno.ENOPROTOOPT
    assert peer.error_of("setsockopt", sid, SOL_SOCKET, 4, 1) == errno.ENOPROTOOPT      # SO_ERROR is read-only
    assert peer.error_of("setsockopt", sid, IPPROTO_TCP, 99, 1) == errno.ENOPROTOOPT
    assert peer.error_of("setsockopt", sid, 17, 1, 1) == errno.ENOPROTOOPT
    assert peer.error_of("getsockopt", sid, SOL_SOCKET, 999) == errno.ENOPROTOOPT
    assert peer.error_of("getsockopt", sid, 0, 999) == errno.ENOPROTOOPT               # IPPROTO_IP
    assert peer.error_of("getsockopt", sid, 41, 1) == errno.EOPNOTSUPP    # Linux's ip_getsockopt: not SOL_IP


def test_value_checks():
    eng, sid, peer = closed()
    assert peer.error_of("setsockopt", sid, IPPROTO_TCP, 2, 10) == errno.EINVAL          # MSS < 88
    assert peer.error_of("setsockopt", sid, IPPROTO_TCP, 4, 0) == errno.EINVAL
    assert peer.error_of("setsockopt", sid, IPPROTO_TCP, 6, 200) == errno.EINVAL
    assert peer.error_of("setsockopt", sid, SOL_SOCKET, 2, "yes") == errno.EINVAL
    peer.call("setsockopt", sid, SOL_SOCKET, 2, b"\x01\x00\x00\x00")
    assert peer.call("getsockopt", sid, SOL_SOCKET, 2) == 1


def test_tcp_maxseg_lowers_our_mss():
    eng, sid, peer = closed()
    peer.call("setsockopt", sid, IPPROTO_TCP, 2, 1000)
    assert peer.call("getsockopt", sid, IPPROTO_TCP, 2) == 1000
    peer.error_of("connect", sid, "198.18.0.1", 80)
    assert peer.take_one().options.mss == 1000


def test_maxseg_when_connected_is_the_send_mss():
    eng, sid, peer = established(peer_kwargs={"mss": 1200})
    assert peer.call("getsockopt", sid, IPPROTO_TCP, 2) == 1200


def test_so_acceptconn():
    eng, sid, peer = listening()
    assert peer.call("getsockopt", sid, SOL_SOCKET, 30) == 1


def test_config_from_mapping():
    cfg = TcpConfig.from_mapping({"msl": "0.5", "max_retries": 3, "ephemeral_ports": "40000-40100",
                                  "tcp.delayed_ack": 0.01})
    assert cfg.msl == 0.5 and cfg.max_retries == 3 and cfg.ephemeral_ports == (40000, 40100)
    assert cfg.delayed_ack == 0.01 and cfg.rto_initial == 1.0
    assert TcpConfig.from_mapping({"ephemeral_ports": [1, 2]}).ephemeral_ports == (1, 2)
    with pytest.raises(ValueError):
        TcpConfig.from_mapping({"no_such_key": 1})
    with pytest.raises(ValueError):
        TcpConfig.from_mapping({"ephemeral_ports": "9-2"})


def test_listing_for_ss():
    eng, sid, peer = established()
    peer.call("send", sid, b"x" * 10)
    rows = {r["id"]: r for r in eng.listing(peer.now)}
    row = rows[sid]
    assert row["state"] == "ESTABLISHED"
    assert row["remote"] == ("198.18.0.1", peer.port)
    assert row["send_q"] == 10 and row["recv_q"] == 0
    assert row["timers"]["retransmit"] == pytest.approx(1.0)
    for key in ("rto", "srtt", "rttvar", "cwnd", "ssthresh", "snd_wnd", "rcv_wnd", "retransmissions", "mss"):
        assert key in row


def test_control_block_is_plain_serialisable_data():
    import json
    eng, sid, peer = established()
    peer.call("send", sid, b"x" * 10)
    peer.send(ACK, b"abc", seq=peer.seq + 5, ack=peer.ack - 10, advance=False)   # out of order too
    d = peer.conn.as_dict()
    json.dumps(d)
    assert d["state"] == "ESTABLISHED" and d["send_buffer"] == 10 and d["recv_buffer"]["ooo"] == [((peer.seq + 5), 3)]
    assert d["timers"]["retransmit"] is not None


def test_tcp_congestion_per_socket_and_inherited_by_accepted_children():
    TCP_CONGESTION = 13
    eng, sid, peer = closed()
    assert peer.call("getsockopt", sid, IPPROTO_TCP, TCP_CONGESTION) == b"cubic"      # Linux's default
    assert peer.call("setsockopt", sid, IPPROTO_TCP, TCP_CONGESTION, b"reno\0\0") is None
    assert peer.call("getsockopt", sid, IPPROTO_TCP, TCP_CONGESTION) == b"reno"
    assert peer.error_of("setsockopt", sid, IPPROTO_TCP, TCP_CONGESTION, b"vegas") == errno.ENOENT
    assert peer.error_of("setsockopt", sid, IPPROTO_TCP, TCP_CONGESTION, 1) == errno.EINVAL
    eng, lid, peer = listening()
    listener = eng.conns[lid]
    peer.send(SYN, options=peer.syn_options())
    kid = next(c for c in eng.conns.values() if c.parent == lid)
    assert kid.cc.name == listener.cc.name and kid.cc is not listener.cc     # the name, not the state


def test_tcp_congestion_key_is_checked():
    from proto.config import ConfigError, build_config
    assert build_config()["tcp"]["congestion"] == "cubic"
    assert build_config(overrides=["tcp.congestion=reno"])["tcp"]["congestion"] == "reno"
    with pytest.raises(ConfigError):
        build_config(overrides=["tcp.congestion=vegas"])
