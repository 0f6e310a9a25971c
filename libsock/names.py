"""Names for libsock: /etc/hosts, then DNS servers reached over the stack itself.

As glibc's resolver with `hosts: files dns`: a name is looked up in /etc/hosts
first; then, when the instance has `dns.servers`, an A query goes to each
server in turn over UDP (a connected socket of the stack, so an ICMP port
unreachable moves on to the next server at once), `dns.attempts` rounds of
`dns.timeout` seconds each; a truncated answer (TC) is asked again over TCP.
A name with no dot is tried with each `dns.search` domain first, a name with
one or more dots as it is first (resolv.conf's ndots 1).  Answers are cached
for their TTL, NXDOMAIN for the SOA's negative TTL (RFC 2308).

Errors are glibc's: NXDOMAIN (or no server configured, or a name /etc/hosts
does not have) -> gaierror(EAI_NONAME); a name with no A record ->
EAI_NODATA; every server silent, refusing or failing -> EAI_AGAIN.

dnspython (pure Python, maintained) builds and parses the messages: name
compression, CNAME chains, TTLs and the SOA of a negative answer are its
work.  Its own transport is not used: it waits for readiness on fileno() and
then calls (two crossings to udpd per answer); libsock's blocking recv with a
timeout sleeps in udpd until the answer comes (one), so queries go over it.  The resolver core
takes its transports and clock as arguments (unit tests use fakes).
"""
from __future__ import annotations

import json
import os
import socket as _std
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

HOSTS = "/etc/hosts"
EAI_NODATA = getattr(_std, "EAI_NODATA", -5)


def _gaierror(code: int) -> _std.gaierror:
    messages = {_std.EAI_NONAME: "Name or service not known", _std.EAI_AGAIN: "Temporary failure in name resolution",
                EAI_NODATA: "No address associated with hostname"}
    return _std.gaierror(code, messages.get(code, "Name resolution failed"))


@dataclass
class Answer:
    canonical: str
    aliases: list[str]
    addresses: list[str]


class NameNotFound(Exception):
    """NXDOMAIN for every name tried."""


class NoData(Exception):
    """The name exists and has no A record."""


class ServersFailed(Exception):
    """Every server was silent, refused, or answered SERVFAIL/REFUSED."""


# -- /etc/hosts ---------------------------------------------------------------------------

@dataclass
class HostsFile:
    path: str = HOSTS
    _stamp: tuple = ()
    _by_name: dict = field(default_factory=dict)      # lower-case name -> (canonical, aliases, [addresses])
    _by_addr: dict = field(default_factory=dict)      # address -> (canonical, aliases)

    def _load(self) -> None:
        try:
            stat = os.stat(self.path)
            stamp = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            stamp = ()
        if stamp == self._stamp and (stamp or not self._by_name):
            return
        by_name, by_addr = {}, {}
        try:
            with open(self.path, encoding="utf-8", errors="replace") as hosts:
                lines = hosts.read().splitlines()
        except OSError:
            lines = []
        for line in lines:
            fields = line.split("#", 1)[0].split()
            if len(fields) < 2:
                continue
            address, names = fields[0], fields[1:]
            try:
                _std.inet_pton(_std.AF_INET, address)
            except OSError:
                continue                         # IPv6 lines: libsock is AF_INET only
            by_addr.setdefault(address, (names[0], names[1:]))
            for name in names:
                entry = by_name.get(name.lower())
                if entry is None:
                    by_name[name.lower()] = (names[0], names[1:], [address])
                elif address not in entry[2]:
                    entry[2].append(address)
        self._stamp, self._by_name, self._by_addr = stamp, by_name, by_addr

    def lookup(self, name: str) -> Answer | None:
        self._load()
        entry = self._by_name.get(name.rstrip(".").lower())
        return Answer(entry[0], list(entry[1]), list(entry[2])) if entry else None

    def reverse(self, address: str) -> tuple[str, list[str]] | None:
        self._load()
        return self._by_addr.get(address)


# -- DNS ----------------------------------------------------------------------------------

@dataclass
class DnsConfig:
    servers: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    timeout: float = 5.0
    attempts: int = 2

    @classmethod
    def from_mapping(cls, dns: dict) -> "DnsConfig":
        return cls(list(dns.get("servers", [])), list(dns.get("search", [])), float(dns.get("timeout", 5.0)),
                   int(dns.get("attempts", 2)))


# transports: (server, query bytes, timeout) -> answer bytes; TimeoutError when silent,
# ConnectionRefusedError (or another OSError) when the server cannot be reached
Transport = Callable[[str, bytes, float], bytes]


class DnsResolver:
    """The resolver: candidates from the search list, servers and attempts, the TTL cache."""

    def __init__(self, config: DnsConfig, udp: Transport, tcp: Transport,
                 clock: Callable[[], float] = time.monotonic):
        self.config, self.udp, self.tcp, self.clock = config, udp, tcp, clock
        self.cache: dict[tuple[str, str], tuple[float, object]] = {}    # (name, type) -> (expires, result)
        self.lock = threading.Lock()
        self.queries = 0                          # sent, UDP and TCP (for tests and curiosity)

    def candidates(self, name: str) -> list[str]:
        if name.endswith("."):
            return [name]
        with_search = [f"{name}.{domain.strip('.')}." for domain in self.config.search]
        return [name + ".", *with_search] if "." in name else [*with_search, name + "."]

    def resolve(self, name: str, rdtype: str = "A") -> Answer:
        """The addresses (or for PTR, in `aliases`, the names) of `name`; NameNotFound, NoData,
        ServersFailed otherwise."""
        if not self.config.servers:
            raise NameNotFound(name)
        nodata = None
        for candidate in self.candidates(name):
            try:
                return self._cached_query(candidate, rdtype)
            except NameNotFound:
                continue
            except NoData as exc:
                nodata = exc             # glibc goes on with the search list, and reports NODATA last
        if nodata is not None:
            raise nodata
        raise NameNotFound(name)

    def _cached_query(self, qname: str, rdtype: str) -> Answer:
        key = (qname.lower(), rdtype)
        now = self.clock()
        with self.lock:
            hit = self.cache.get(key)
            if hit is not None and hit[0] > now:
                result = hit[1]
                if isinstance(result, Exception):
                    raise result
                return result
        result, ttl = self._query(qname, rdtype)
        if ttl > 0:
            with self.lock:
                self.cache[key] = (self.clock() + ttl, result)
        if isinstance(result, Exception):
            raise result
        return result

    def _query(self, qname: str, rdtype: str) -> tuple[object, float]:
        import dns.flags
        import dns.message
        import dns.rcode
        import dns.rdatatype
        query = dns.message.make_query(qname, rdtype)
        wire = query.to_wire()
        for _ in range(self.config.attempts):
            for server in self.config.servers:
                try:
                    self.queries += 1
                    raw = self.udp(server, wire, self.config.timeout)
                    answer = dns.message.from_wire(raw, ignore_trailing=True)
                    if answer.id != query.id:
                        continue
                    if answer.flags & dns.flags.TC:
                        self.queries += 1
                        answer = dns.message.from_wire(self.tcp(server, wire, self.config.timeout))
                except (OSError, TimeoutError):
                    continue             # silent or unreachable: the next server
                except Exception:        # a malformed answer (dns.exception.*): as a silent server
                    continue
                rcode = answer.rcode()
                if rcode == dns.rcode.NXDOMAIN:
                    return NameNotFound(qname), _negative_ttl(answer)
                if rcode != dns.rcode.NOERROR:
                    continue             # SERVFAIL, REFUSED: ask the next one
                return _answer(qname, answer, dns.rdatatype.from_text(rdtype))
        raise ServersFailed(qname)


def _negative_ttl(answer) -> float:
    """RFC 2308 section 5: the SOA's TTL, at most its MINIMUM field; no SOA: not cached."""
    import dns.rdatatype
    for rrset in answer.authority:
        if rrset.rdtype == dns.rdatatype.SOA:
            return float(min(rrset.ttl, rrset[0].minimum))
    return 0.0


def _answer(qname: str, answer, rdtype: int) -> tuple[object, float]:
    """Follow CNAMEs from qname through the answer section; the records of rdtype at the end."""
    import dns.rdatatype
    name = qname.lower()
    aliases, ttl = [], None
    for _ in range(16):
        step = None
        for rrset in answer.answer:
            if rrset.name.to_text().lower() != name:
                continue
            if rrset.rdtype == rdtype:
                ttl = rrset.ttl if ttl is None else min(ttl, rrset.ttl)
                values = [rdata.to_text() for rdata in rrset]
                if rdtype == dns.rdatatype.PTR:
                    return Answer(name.rstrip("."), [v.rstrip(".") for v in values], []), float(ttl)
                return Answer(name.rstrip("."), [a.rstrip(".") for a in aliases], values), float(ttl)
            if rrset.rdtype == dns.rdatatype.CNAME:
                step = rrset
        if step is None:
            break
        aliases.append(name)
        ttl = step.ttl if ttl is None else min(ttl, step.ttl)
        name = step[0].target.to_text().lower()
    return NoData(qname), _negative_ttl(answer)


# -- the transports over the stack ---------------------------------------------------------

def udp_over_stack(server: str, query: bytes, timeout: float) -> bytes:
    """One query over a connected libsock UDP socket: its answer, TimeoutError, or
    ConnectionRefusedError when the server's port is unreachable."""
    from libsock.udp import DatagramSocket
    with DatagramSocket() as sock:
        sock.settimeout(timeout)
        sock.connect((server, 53))
        sock.send(query)
        deadline = time.monotonic() + timeout
        while True:
            answer = sock.recv(65535)
            if len(answer) >= 2 and answer[:2] == query[:2]:
                return answer
            sock.settimeout(max(0.001, deadline - time.monotonic()))     # not ours: wait on


def tcp_over_stack(server: str, query: bytes, timeout: float) -> bytes:
    """RFC 1035 section 4.2.2 (and RFC 7766): a two-byte length, then the message."""
    from libsock.socket import socket
    with socket() as sock:
        sock.settimeout(timeout)
        sock.connect((server, 53))
        sock.sendall(len(query).to_bytes(2, "big") + query)
        received = b""
        while len(received) < 2 or len(received) < 2 + int.from_bytes(received[:2], "big"):
            chunk = sock.recv(65537)
            if not chunk:
                raise ConnectionResetError("the DNS server closed before its answer was whole")
            received += chunk
        return received[2:2 + int.from_bytes(received[:2], "big")]


# -- the module's functions -----------------------------------------------------------------

def numeric(host: str) -> str | None:
    """The address a numeric host names, as CPython reads one ("" is INADDR_ANY, the forms
    inet_aton takes, "<broadcast>"), or None for a name."""
    if host == "":
        return "0.0.0.0"
    if host == "<broadcast>":
        return "255.255.255.255"
    try:
        return _std.inet_ntoa(_std.inet_aton(host))
    except (OSError, ValueError):     # (ValueError: an embedded NUL)
        return None


_hosts = HostsFile()
_resolvers: dict[str, DnsResolver] = {}
_resolvers_lock = threading.Lock()


def _old_dns_settings(run_dir: str) -> dict:
    try:
        with open(os.path.join(run_dir, "config.json")) as config:
            return json.load(config).get("dns", {})
    except (OSError, ValueError, AttributeError):
        return {}


def resolver() -> DnsResolver:
    """The resolver of the instance libsock uses (its dns.* settings from the run directory)."""
    run_dir = os.environ.get("NETSTACK_RUN", "/run/netstack/default")
    with _resolvers_lock:
        found = _resolvers.get(run_dir)
        if found is None:
            try:
                with open(os.path.join(run_dir, "public", "dns.json")) as config:    # (netstack up)
                    dns = json.load(config)
            except FileNotFoundError:        # an instance started before public/dns.json
                dns = _old_dns_settings(run_dir)
            except (OSError, ValueError):
                dns = {}
            found = _resolvers[run_dir] = DnsResolver(DnsConfig.from_mapping(dns), udp_over_stack, tcp_over_stack)
        return found


def lookup(name: str) -> Answer:
    """/etc/hosts, then DNS: the name's canonical name, aliases and IPv4 addresses; gaierror as glibc."""
    found = _hosts.lookup(name)
    if found is not None:
        return found
    if name.rstrip(".").lower() == "localhost":     # (a hosts file without it)
        return Answer("localhost", [], ["127.0.0.1"])
    if not name or len(name) > 253 or any(len(label) > 63 for label in name.rstrip(".").split(".")) \
            or ".." in name:
        raise _gaierror(_std.EAI_NONAME)
    try:
        return resolver().resolve(name)
    except NameNotFound:
        raise _gaierror(_std.EAI_NONAME) from None
    except NoData:
        raise _gaierror(EAI_NODATA) from None
    except ServersFailed:
        raise _gaierror(_std.EAI_AGAIN) from None


def reverse(address: str) -> str | None:
    """The name of an IPv4 address: /etc/hosts, then a PTR query; None when none is known."""
    found = _hosts.reverse(address)
    if found is not None:
        return found[0]
    qname = ".".join(reversed(address.split("."))) + ".in-addr.arpa."
    try:
        names = resolver().resolve(qname, "PTR").aliases
    except (NameNotFound, NoData, ServersFailed):
        return None
    return names[0] if names else None


def _port_number(port, kind: int, flags: int) -> int:
    if port is None:
        return 0
    if isinstance(port, bytes):
        port = port.decode()
    if isinstance(port, str):
        if port.isdigit():
            return int(port)
        if flags & _std.AI_NUMERICSERV:
            raise _gaierror(_std.EAI_NONAME)
        try:        # a service name from /etc/services, as the C library looks it up
            return _std.getservbyname(port, "udp" if kind == _std.SOCK_DGRAM else "tcp")
        except OSError:
            raise _std.gaierror(_std.EAI_SERVICE, "Servname not supported for ai_socktype") from None
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError("getaddrinfo() argument 2 must be integer or string")
    if not 0 <= port <= 65535:
        raise OverflowError("getaddrinfo(): port must be 0-65535.")
    return port


def getaddrinfo(host, port, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0):
    """As socket.getaddrinfo for AF_INET: numeric hosts, /etc/hosts, then DNS over the stack.
    Type 0 gives a SOCK_STREAM and a SOCK_DGRAM entry per address (glibc adds SOCK_RAW, which
    libsock has not)."""
    if family not in (0, _std.AF_INET):
        raise _std.gaierror(_std.EAI_FAMILY, "ai_family not supported")
    if type not in (0, _std.SOCK_STREAM, _std.SOCK_DGRAM):
        raise _std.gaierror(_std.EAI_SOCKTYPE, "ai_socktype not supported")
    if host is None and port is None:
        raise _gaierror(_std.EAI_NONAME)
    if type:
        kinds = [type]
    elif proto == _std.IPPROTO_UDP:
        kinds = [_std.SOCK_DGRAM]
    elif proto == _std.IPPROTO_TCP:
        kinds = [_std.SOCK_STREAM]
    else:
        kinds = [_std.SOCK_STREAM, _std.SOCK_DGRAM]
    ports = [_port_number(port, kind, flags) for kind in kinds]
    if isinstance(host, bytes):
        host = host.decode()
    canonical = ""
    if host is None:
        addresses = ["0.0.0.0" if flags & _std.AI_PASSIVE else "127.0.0.1"]
    else:
        address = numeric(host)
        if address is not None:
            addresses, canonical = [address], host
        elif flags & _std.AI_NUMERICHOST:
            raise _gaierror(_std.EAI_NONAME)
        else:
            answer = lookup(host)
            addresses, canonical = answer.addresses, answer.canonical
    result = []
    for address in addresses:
        for kind, number in zip(kinds, ports):
            name = canonical if flags & _std.AI_CANONNAME and not result else ""
            protocol = _std.IPPROTO_UDP if kind == _std.SOCK_DGRAM else _std.IPPROTO_TCP
            result.append((_std.AddressFamily.AF_INET, _std.SocketKind(kind), protocol, name, (address, number)))
    return result


def gethostbyname(hostname: str) -> str:
    return gethostbyname_ex(hostname)[2][0]


def gethostbyname_ex(hostname: str) -> tuple[str, list[str], list[str]]:
    """(canonical name, aliases, addresses), as socket.gethostbyname_ex."""
    address = numeric(hostname)
    if address is not None:
        return hostname, [], [address]
    answer = lookup(hostname)
    aliases = [alias for alias in answer.aliases if alias != answer.canonical]
    if hostname.rstrip(".").lower() != answer.canonical.lower() and hostname not in aliases:
        aliases.insert(0, hostname.rstrip("."))
    return answer.canonical, aliases, answer.addresses


def gethostbyaddr(ip: str) -> tuple[str, list[str], list[str]]:
    """(name, aliases, [address]) of an address (a name is looked up first); herror when none is known."""
    address = numeric(ip)
    if address is None:
        address = lookup(ip).addresses[0]
    name = reverse(address)
    if name is None:
        raise _std.herror(1, "Unknown host")
    return name, [], [address]


def getnameinfo(sockaddr, flags: int) -> tuple[str, str]:
    """(host, port) names of an AF_INET address, as socket.getnameinfo: the host's name from
    /etc/hosts or a PTR query (its number when none is known, EAI_NONAME with NI_NAMEREQD)."""
    if not isinstance(sockaddr, tuple) or len(sockaddr) not in (2, 4):
        raise TypeError("getnameinfo() argument 1 must be a tuple")
    host, port = sockaddr[0], sockaddr[1]
    if not isinstance(port, int):
        raise TypeError("'str' object cannot be interpreted as an integer")
    address = numeric(host)
    if address is None:
        address = lookup(host).addresses[0]
    name = None if flags & _std.NI_NUMERICHOST else reverse(address)
    if name is None:
        if flags & _std.NI_NAMEREQD:
            raise _gaierror(_std.EAI_NONAME)
        name = address
    elif flags & _std.NI_NOFQDN:
        name = name.split(".")[0]
    service = str(port)
    if not flags & _std.NI_NUMERICSERV:
        try:
            service = _std.getservbyport(port, "udp" if flags & _std.NI_DGRAM else "tcp")
        except OSError:
            pass
    return name, service
