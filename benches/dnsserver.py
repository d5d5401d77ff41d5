"""The benchmark's DNS: a small authoritative server for `test.`, answering as a real zone does.

Why not dnsmasq: for a name that does not exist it answers NXDOMAIN without the zone's SOA,
and an answer without SOA may not be cached (RFC 2308 §5). Real zones always send it, so on
the Internet "no such name" (`_mta-sts.<domain>`, `_dmarc.<tld>`) is cached like any other
answer; with dnsmasq the server under test would ask again for every message.

Usage: python3 dnsserver.py IP PORT SINK_IP SENDER_DOMAIN   (serves until SIGTERM; prints "ready" once bound)
"""

import signal
import socket
import sys

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

TTL = 300
ZONE = dns.name.from_text("test.")
SOA = dns.rrset.from_text(
    ZONE, TTL, "IN", "SOA", "ns.test. hostmaster.test. 1 3600 600 86400 300")


def records(sink_ip, sender_domain):
    """name -> {type: rrset}: MX of the sink, the sender's SPF and DMARC."""
    table = {}

    def add(name, rtype, *values):
        n = dns.name.from_text(name)
        rrset = dns.rrset.from_text(n, TTL, "IN", rtype, *values)
        table.setdefault(n, {})[rrset.rdtype] = rrset

    add("test.", "SOA", SOA[0].to_text())
    add("sink.test.", "MX", "10 mx.sink.test.")
    add("mx.sink.test.", "A", sink_ip)
    add(f"{sender_domain}.", "TXT", '"v=spf1 ip4:127.0.0.0/8 -all"')
    add(f"_dmarc.{sender_domain}.", "TXT", '"v=DMARC1; p=none"')
    return table


def answer(query, table):
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    if not query.question:
        response.set_rcode(dns.rcode.FORMERR)
        return response
    q = query.question[0]
    if not q.name.is_subdomain(ZONE):
        response.flags &= ~dns.flags.AA
        response.set_rcode(dns.rcode.REFUSED)
        return response
    node = table.get(q.name)
    if node is None:
        # RFC 2308: NXDOMAIN with the SOA, so resolvers may cache it.
        response.set_rcode(dns.rcode.NXDOMAIN)
        response.authority.append(SOA)
    elif q.rdtype in node:
        response.answer.append(node[q.rdtype])
    else:
        response.authority.append(SOA)  # NODATA
    return response


def main():
    ip, port = sys.argv[1], int(sys.argv[2])
    sink_ip, sender_domain = sys.argv[3], sys.argv[4]
    table = records(sink_ip, sender_domain)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((ip, port))
        print("ready", flush=True)
        while True:
            data, peer = s.recvfrom(4096)
            try:
                query = dns.message.from_wire(data)
            except Exception:  # noqa: BLE001 - a malformed query is dropped, as servers do
                continue
            s.sendto(answer(query, table).to_wire(), peer)


if __name__ == "__main__":
    main()
