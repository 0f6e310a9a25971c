"""libsock's resolver: search list, servers and attempts, TC -> TCP, the TTL cache, glibc's errors;
with fake transports and a fake clock (dnspython makes the answers a server would)."""
from __future__ import annotations

import socket

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from libsock import names
from libsock.names import DnsConfig, DnsResolver, HostsFile, NameNotFound, NoData, ServersFailed


class FakeServers:
    """Answers from a table {qname: [rrsets]}; unknown names get NXDOMAIN with an SOA."""

    def __init__(self, zone: dict, silent=(), refusing=(), truncate=False):
        self.zone, self.silent, self.refusing, self.truncate = zone, set(silent), set(refusing), truncate
        self.asked: list[tuple[str, str, str]] = []      # (transport, server, qname)

    def _answer(self, query_wire: bytes) -> dns.message.Message:
        query = dns.message.from_wire(query_wire)
        qname = query.question[0].name.to_text()
        answer = dns.message.make_response(query)
        if qname in self.zone:
            for text in self.zone[qname]:
                answer.answer.append(dns.rrset.from_text(*text))
        else:
            answer.set_rcode(dns.rcode.NXDOMAIN)
            answer.authority.append(dns.rrset.from_text("test.", 300, "IN", "SOA",
                                                        "ns.test. admin.test. 1 3600 600 86400 60"))
        return answer

    def udp(self, server: str, wire: bytes, timeout: float) -> bytes:
        self.asked.append(("udp", server, dns.message.from_wire(wire).question[0].name.to_text()))
        if server in self.silent:
            raise TimeoutError("timed out")
        if server in self.refusing:
            raise ConnectionRefusedError(111, "refused")
        answer = self._answer(wire)
        if self.truncate:
            answer.answer.clear()
            answer.flags |= dns.flags.TC
        return answer.to_wire()

    def tcp(self, server: str, wire: bytes, timeout: float) -> bytes:
        self.asked.append(("tcp", server, dns.message.from_wire(wire).question[0].name.to_text()))
        return self._answer(wire).to_wire()


ZONE = {
    "web.test.": [("web.test.", 60, "IN", "A", "198.18.0.1", "198.18.0.9")],
    "www.test.": [("www.test.", 30, "IN", "CNAME", "web.test."), ("web.test.", 60, "IN", "A", "198.18.0.1")],
    "mail.test.": [("mail.test.", 60, "IN", "MX", "10 web.test.")],
}


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def resolver(servers=("198.18.0.1",), search=(), attempts=2, **fake) -> tuple[DnsResolver, FakeServers, Clock]:
    fakes, clock = FakeServers(ZONE, **fake), Clock()
    return DnsResolver(DnsConfig(list(servers), list(search), 5.0, attempts), fakes.udp, fakes.tcp, clock), \
        fakes, clock


def test_a_records_and_cname_chains():
    r, _, _ = resolver()
    assert sorted(r.resolve("web.test").addresses) == ["198.18.0.1", "198.18.0.9"]
    answer = r.resolve("www.test")
    assert (answer.canonical, answer.aliases, answer.addresses) == ("web.test", ["www.test"], ["198.18.0.1"])


def test_answers_are_cached_for_their_ttl_and_nxdomain_for_the_soa_minimum():
    r, fakes, clock = resolver()
    r.resolve("www.test")
    r.resolve("www.test")
    assert len(fakes.asked) == 1
    clock.now += 29.9
    r.resolve("www.test")
    assert len(fakes.asked) == 1
    clock.now += 0.2                          # past the CNAME's 30 s: the smallest TTL of the chain
    r.resolve("www.test")
    assert len(fakes.asked) == 2
    with pytest.raises(NameNotFound):
        r.resolve("nothing.test")
    with pytest.raises(NameNotFound):
        r.resolve("nothing.test")
    assert len(fakes.asked) == 3
    clock.now += 60.1                         # min(SOA TTL 300, MINIMUM 60)
    with pytest.raises(NameNotFound):
        r.resolve("nothing.test")
    assert len(fakes.asked) == 4


def test_search_list_order_follows_ndots_1():
    r, fakes, _ = resolver(search=["corp", "test"])
    assert "198.18.0.1" in r.resolve("web").addresses          # no dot: the search list first
    assert [q for _, _, q in fakes.asked] == ["web.corp.", "web.test."]
    fakes.asked.clear()
    with pytest.raises(NameNotFound):
        r.resolve("web.nowhere")                                   # a dot: as it is first, then the list
    assert [q for _, _, q in fakes.asked] == ["web.nowhere.", "web.nowhere.corp.", "web.nowhere.test."]
    fakes.asked.clear()
    with pytest.raises(NameNotFound):
        r.resolve("web.nowhere.")                                  # absolute: only itself
    assert fakes.asked == []                                       # (cached NXDOMAIN)


def test_silent_servers_are_retried_per_attempt_then_eai_again():
    r, fakes, _ = resolver(servers=["198.18.0.7", "198.18.0.8"], silent={"198.18.0.7", "198.18.0.8"}, attempts=2)
    with pytest.raises(ServersFailed):
        r.resolve("web.test")
    assert [s for _, s, _ in fakes.asked] == ["198.18.0.7", "198.18.0.8"] * 2


def test_a_refusing_server_moves_on_to_the_next():
    r, fakes, _ = resolver(servers=["198.18.0.7", "198.18.0.1"], refusing={"198.18.0.7"})
    assert "198.18.0.1" in r.resolve("web.test").addresses
    assert [s for _, s, _ in fakes.asked] == ["198.18.0.7", "198.18.0.1"]


def test_truncated_answers_are_asked_again_over_tcp():
    r, fakes, _ = resolver(truncate=True)
    assert sorted(r.resolve("web.test").addresses) == ["198.18.0.1", "198.18.0.9"]
    assert [t for t, _, _ in fakes.asked] == ["udp", "tcp"]


def test_a_name_without_a_records_is_nodata():
    r, _, _ = resolver()
    with pytest.raises(NoData):
        r.resolve("mail.test")


def test_no_servers_means_not_found():
    r, fakes, _ = resolver(servers=[])
    with pytest.raises(NameNotFound):
        r.resolve("web.test")
    assert fakes.asked == []


def test_lookup_gives_glibcs_errors(monkeypatch):
    r, _, _ = resolver(servers=["198.18.0.7"], silent={"198.18.0.7"})
    monkeypatch.setattr(names, "resolver", lambda: r)
    with pytest.raises(socket.gaierror) as caught:
        names.lookup("web.test")
    assert caught.value.errno == socket.EAI_AGAIN
    r2, _, _ = resolver()
    monkeypatch.setattr(names, "resolver", lambda: r2)
    with pytest.raises(socket.gaierror) as caught:
        names.lookup("nothing.test")
    assert caught.value.errno == socket.EAI_NONAME
    with pytest.raises(socket.gaierror) as caught:
        names.lookup("mail.test")
    assert caught.value.errno == names.EAI_NODATA
    info = names.getaddrinfo("www.test", "domain", flags=socket.AI_CANONNAME)
    assert info == [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "web.test", ("198.18.0.1", 53)),
                    (socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP, "", ("198.18.0.1", 53))]
    assert names.gethostbyname_ex("www.test") == ("web.test", ["www.test"], ["198.18.0.1"])
    with pytest.raises(socket.gaierror):
        names.getaddrinfo("web.test", 80, flags=socket.AI_NUMERICHOST)


def test_hosts_file_first_and_reverse(tmp_path):
    path = tmp_path / "hosts"
    path.write_text("# comment\n198.18.0.5  db.test db  # the database\n::1 ip6-localhost\n"
                    "198.18.0.6 db.test\n")
    hosts = HostsFile(str(path))
    answer = hosts.lookup("DB")
    assert (answer.canonical, answer.aliases, answer.addresses) == ("db.test", ["db"], ["198.18.0.5"])
    assert hosts.lookup("db.test").addresses == ["198.18.0.5", "198.18.0.6"]
    assert hosts.reverse("198.18.0.5") == ("db.test", ["db"]) and hosts.lookup("ip6-localhost") is None
    path.write_text("198.18.0.8 db.test\n")
    import os
    os.utime(path, ns=(1, 1))                 # a changed file is read again
    assert hosts.lookup("db.test").addresses == ["198.18.0.8"]
