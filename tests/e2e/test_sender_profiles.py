"""Ten sender profiles through a forwarding alias, judged at the receiver as Gmail would
(issue 18, "How it will be checked").

Each profile is a domain pN-*.test with its own SPF, DKIM and DMARC records, or none
(peers.SENDER_PROFILES_TXT), sending over port 25 to fwd@example.test, an alias forwarding to
carol@remote1.test (a sink). The receiver's evaluator below judges every copy the sink gets
by itself, trusting nothing tambo added (ARC is ignored): SPF of the envelope sender (or of
the HELO name for `<>`) for tambo's connecting address, every DKIM signature with dkimpy
against the test DNS, and DMARC (RFC 7489) with relaxed alignment and the organizational
domain fallback.

- Every forwardable copy is accepted and passes DMARC at the receiver, or, under `p=none` or
  without a record, is merely delivered.
- A copy whose own aligned DKIM signature survives keeps its From: and arrives byte for byte
  below tambo's trace headers.
- A copy whose DMARC pass at tambo rested on SPF alone under quarantine/reject (SRS takes that
  away) arrives with a From: of example.test, the author in Reply-To: and X-Original-From:,
  and a valid DKIM signature d=example.test.
- SPF fail under p=reject is refused at the end of DATA and never reaches the sink.

The same evaluator first judges each original as tambo receives it (from 127.0.0.1), so a
wrong record in the zone fails as such, not as a forwarding bug.
"""

from __future__ import annotations

import ast
import base64
import email.utils
import ipaddress
import re
from dataclasses import dataclass

import dkim
import pytest

from helpers import header_block, header_values, make_message, queue_id, send_raw, wait_until
from peers import (SENDER_DKIM_SELECTOR, SENDER_ED25519_SELECTOR, install_dkim_keys,
                   openssl)

ALIAS = "fwd@example.test"
FORWARDER = "example.test"
SIGNED = [b"from", b"to", b"subject", b"message-id", b"date"]
# What tambo may put above a message it forwards unchanged: trace (RFC 5321 §4.4), its
# Authentication-Results (RFC 8601) and the ARC set (RFC 8617).
TRACE_FIELDS = {"received", "authentication-results", "arc-seal", "arc-message-signature",
                "arc-authentication-results"}


# --------------------------------------------------------------------------------------------
# The receiver's evaluator
# --------------------------------------------------------------------------------------------


def txt_records(net, name: str) -> list[str] | None:
    """Each TXT record at `name` as one string; [] when there is none; None on a DNS error."""
    import dns.exception
    import dns.resolver
    try:
        answer = net.dns.resolver().resolve(name, "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException:
        return None
    return [b"".join(rr.strings).decode(errors="replace") for rr in answer]


def addresses(net, name: str, mx: bool) -> list | None:
    """The addresses of `name` (A and AAAA), or of its MX hosts; None on a DNS error."""
    import dns.exception
    import dns.resolver
    try:
        hosts = [str(r.exchange).rstrip(".") for r in net.dns.resolver().resolve(name, "MX")] \
            if mx else [name]
        out = []
        for host in hosts:
            for rtype in ("A", "AAAA"):
                try:
                    out += [ipaddress.ip_address(r.address)
                            for r in net.dns.resolver().resolve(host, rtype)]
                except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                    pass
        return out
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException:
        return None


class Spf:
    """A deliberately small SPF evaluator (RFC 7208 §4) for the records this file publishes:
    it covers only the mechanisms ip4, ip6 (with CIDR lengths), a, mx (without), include and
    all, their qualifiers, and the redirect= modifier; anything else (exists, ptr, macros) is
    a permerror here. DNS-querying terms count against the limit of 10 (§4.6.4)."""

    QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}

    def __init__(self, net, ip: str):
        self.net, self.ip = net, ipaddress.ip_address(ip)
        self.lookups = 0

    def check_host(self, domain: str) -> str:
        records = txt_records(self.net, domain)
        if records is None:
            return "temperror"
        spf = [r for r in records if r.lower() == "v=spf1" or r.lower().startswith("v=spf1 ")]
        if not spf:
            return "none"
        if len(spf) > 1:
            return "permerror"  # §4.5
        redirect = None
        for term in spf[0].split()[1:]:
            if re.fullmatch(r"[A-Za-z][\w.-]*=.*", term):
                name, _, value = term.partition("=")
                if name.lower() == "redirect":
                    redirect = value
                continue  # §6: unknown modifiers are ignored
            qualifier = term[0] if term[0] in self.QUALIFIERS else "+"
            matched = self.mechanism(term.lstrip("+-~?"), domain)
            if matched in ("temperror", "permerror"):
                return matched
            if matched:
                return self.QUALIFIERS[qualifier]
        if redirect is not None:  # §6.1: only when no mechanism matched
            result = self.counted() or self.check_host(redirect)
            return "permerror" if result == "none" else result
        return "neutral"  # §4.7

    def counted(self) -> str | None:
        self.lookups += 1
        return "permerror" if self.lookups > 10 else None

    def mechanism(self, mech: str, domain: str) -> bool | str:
        name, _, arg = mech.partition(":")
        name = name.lower()
        if name == "all":
            return True
        if name in ("ip4", "ip6"):
            try:
                return self.ip in ipaddress.ip_network(arg, strict=False)
            except ValueError:
                return "permerror"
        if name in ("a", "mx") and "/" not in arg:
            found = self.counted() or addresses(self.net, arg or domain, mx=name == "mx")
            if found is None or isinstance(found, str):
                return found or "temperror"
            return self.ip in found
        if name == "include":
            result = self.counted() or self.check_host(arg)
            if result in ("temperror", "permerror"):
                return result
            return "permerror" if result == "none" else result == "pass"  # §5.2
        return "permerror"


def org_domain(domain: str) -> str:
    """The organizational domain (RFC 7489 §3.2) without a public suffix list: every test
    domain is <name>.test, so it is the last two labels."""
    return ".".join(domain.lower().rstrip(".").split(".")[-2:])


def aligned(a: str, b: str, mode: str) -> bool:
    """RFC 7489 §3.1: strict is the same name, relaxed the same organizational domain."""
    if mode == "s":
        return a.lower() == b.lower()
    return org_domain(a) == org_domain(b)


def dmarc_record(net, from_domain: str) -> tuple[dict[str, str] | None, bool]:
    """RFC 7489 §6.6.3: the From: domain's record, else its organizational domain's; with
    whether it is the latter (then `sp=` applies)."""
    for domain, fallback in ((from_domain, False), (org_domain(from_domain), True)):
        if fallback and domain == from_domain.lower():
            break
        records = [r for r in (txt_records(net, f"_dmarc.{domain}") or [])
                   if re.match(r"v\s*=\s*DMARC1\s*(;|$)", r)]
        if len(records) == 1:
            tags = {}
            for part in records[0].split(";"):
                k, eq, v = part.partition("=")
                if eq:
                    tags[k.strip().lower()] = v.strip()
            if tags.get("p") in ("none", "quarantine", "reject"):
                return tags, fallback
    return None, False


def dkim_tags(value: str) -> dict[str, str]:
    return {k.strip(): re.sub(r"\s+", "", v)
            for k, eq, v in (p.partition("=") for p in value.split(";")) if eq}


@dataclass
class Judgement:
    spf: str  # for the SPF identity: the MAIL FROM domain, or the HELO name for <>
    spf_domain: str
    dkim: list[tuple[str, str, bool]]  # (d=, a=, verified) per DKIM-Signature, in order
    from_domain: str
    dmarc: str  # pass, fail or none
    policy: str | None  # the policy that applies (p=, or sp= under fallback); None: no record
    spf_aligned: bool = False
    dkim_aligned: bool = False

    def __str__(self) -> str:
        return (f"spf={self.spf} ({self.spf_domain}) dkim={self.dkim} from={self.from_domain} "
                f"dmarc={self.dmarc} policy={self.policy} spf_aligned={self.spf_aligned} "
                f"dkim_aligned={self.dkim_aligned}")


def evaluate(net, data: bytes, mail_from: str, helo: str, ip: str) -> Judgement:
    """How a receiver judges `data` arriving from `ip` with this envelope and HELO."""
    # RFC 7208 §2.4: for the null reverse-path the identity is postmaster@<HELO name>.
    spf_domain = mail_from.rpartition("@")[2] if mail_from else helo
    spf = Spf(net, ip).check_host(spf_domain)
    sigs = []
    verifier = dkim.DKIM(data)
    for i, value in enumerate(header_values(data, "dkim-signature")):
        tags = dkim_tags(value)
        try:
            ok = bool(verifier.verify(idx=i, dnsfunc=net.dns.dkim_dnsfunc()))
        except dkim.DKIMException:
            ok = False
        sigs.append((tags.get("d", "").lower(), tags.get("a", ""), ok))
    froms = email.utils.getaddresses(header_values(data, "from"))
    # RFC 7489 §6.6.1: one From: with one address, else DMARC does not apply here.
    from_domain = froms[0][1].rpartition("@")[2].lower() if len(froms) == 1 else ""
    j = Judgement(spf, spf_domain, sigs, from_domain, "none", None)
    record, fallback = dmarc_record(net, from_domain) if from_domain else (None, False)
    if record is None:
        return j
    j.policy = record.get("sp", record["p"]) if fallback else record["p"]
    j.spf_aligned = spf == "pass" and aligned(spf_domain, from_domain, record.get("aspf", "r"))
    j.dkim_aligned = any(ok and aligned(d, from_domain, record.get("adkim", "r"))
                         for d, _, ok in sigs)
    j.dmarc = "pass" if j.spf_aligned or j.dkim_aligned else "fail"
    return j


# --------------------------------------------------------------------------------------------
# The profiles
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signer:
    domain: str
    algorithm: str = "rsa"  # or "ed25519"
    canon: tuple[bytes, bytes] = (b"relaxed", b"relaxed")
    length: bool = False  # l=


# An 8-bit body with what canonicalization trips over: trailing white space, white space
# inside lines, lines starting with a dot (dot-stuffed on the wire), a 995-octet line, and
# whitespace-only lines at the end.
AWKWARD_BODY = (
    "Grüße aus Köln, ñandú, 日本語: 8-bit UTF-8.\r\n"
    "trailing blanks and a tab   \t\r\n"
    "white  space \t inside\t\tthe line\r\n"
    ".a line starting with a dot\r\n"
    "..and one with two\r\n"
    ".\r\n"
    "long " + "0123456789" * 99 + "\r\n"
    "\r\n"
    "  \r\n"
    "\t\r\n"
    " \t \r\n"
)
UTF8_HEADERS = ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
                "Content-Transfer-Encoding: 8bit"]
DSN_BODY = (
    "This is a MIME-encapsulated message.\r\n"
    "\r\n"
    "--dsn-boundary\r\n"
    "Content-Type: text/plain\r\n"
    "\r\n"
    "Your message could not be delivered.\r\n"
    "\r\n"
    "--dsn-boundary\r\n"
    "Content-Type: message/delivery-status\r\n"
    "\r\n"
    "Reporting-MTA: dns; mta.p7-dsn.test\r\n"
    "\r\n"
    "Final-Recipient: rfc822; nobody@p7-dsn.test\r\n"
    "Action: failed\r\n"
    "Status: 5.1.1\r\n"
    "\r\n"
    "--dsn-boundary\r\n"
    "Content-Type: text/rfc822-headers\r\n"
    "\r\n"
    "From: fwd@example.test\r\n"
    "To: nobody@p7-dsn.test\r\n"
    "Subject: an earlier message\r\n"
    "\r\n"
    "--dsn-boundary--\r\n"
)
DSN_HEADERS = ["MIME-Version: 1.0",
               'Content-Type: multipart/report; report-type=delivery-status; '
               'boundary="dsn-boundary"', "Auto-Submitted: auto-replied"]


@dataclass(frozen=True)
class Profile:
    id: str
    author: str  # the From: field's value
    mail_from: str  # "" for <>
    origin: tuple[str, str | None]  # (DMARC result, policy) of the original, from 127.0.0.1
    signers: tuple[Signer, ...] = ()
    helo: str = "client.example"
    body: str = "Hello from a sender profile.\r\n"
    headers: tuple[str, ...] = ()
    mail_params: str = ""
    rewritten: bool = False  # expected to leave with a From: of example.test
    refused: bool = False  # expected to be refused at the end of DATA


PROFILES = [
    Profile("p1-spf-only-reject", "Pat One <pat@p1-spfonly.test>", "pat@p1-spfonly.test",
            ("pass", "reject"), rewritten=True),
    Profile("p2-spf-dkim-rsa-reject", "Pia Two <pia@p2-rsa.test>", "pia@p2-rsa.test",
            ("pass", "reject"), signers=(Signer("p2-rsa.test"),)),
    Profile("p3-spf-dkim-ed25519-and-rsa-reject", "Dee Three <dee@p3-dual.test>",
            "dee@p3-dual.test", ("pass", "reject"),
            signers=(Signer("p3-dual.test", "ed25519"), Signer("p3-dual.test"))),
    # From: a subdomain, DMARC through the organizational domain, d= the parent (relaxed);
    # the envelope is an ESP's, SPF pass but unaligned.
    Profile("p4-dkim-only-quarantine", "News Four <news@mail.p4-dkimonly.test>",
            "bounce-4711@p4-esp.test", ("pass", "quarantine"),
            signers=(Signer("p4-dkimonly.test"),)),
    Profile("p5-simple-simple", "Sam Five <sam@p5-simple.test>", "sam@p5-simple.test",
            ("pass", "reject"), signers=(Signer("p5-simple.test", canon=(b"simple", b"simple")),)),
    Profile("p6-relaxed-l-8bit-awkward", "Lou Six <lou@p6-lcount.test>", "lou@p6-lcount.test",
            ("pass", "reject"), signers=(Signer("p6-lcount.test", length=True),),
            body=AWKWARD_BODY, headers=tuple(UTF8_HEADERS), mail_params=" BODY=8BITMIME"),
    # A bounce: SPF of <> is the HELO name's (RFC 7208 §2.4), unsigned, p=reject.
    Profile("p7-null-sender-dsn", "Mail Delivery System <mailer-daemon@p7-dsn.test>", "",
            ("pass", "reject"), helo="mta.p7-dsn.test", body=DSN_BODY,
            headers=tuple(DSN_HEADERS), rewritten=True),
    Profile("p8-p-none", "Nel Eight <nel@p8-pnone.test>", "nel@p8-pnone.test",
            ("pass", "none")),
    Profile("p9-no-records", "Nia Nine <nia@p9-bare.test>", "nia@p9-bare.test",
            ("none", None)),
    Profile("p10-spf-fail-reject", "Ten <ten@p10-spffail.test>", "ten@p10-spffail.test",
            ("fail", "reject"), refused=True),
]


def signing_key(net, signer: Signer) -> tuple[bytes, bytes, bytes]:
    """(selector, private key as dkimpy takes it, a=) of the sender keys in the test DNS."""
    if signer.algorithm == "ed25519":
        # dkimpy takes an Ed25519 key as its base64 32-byte seed: the tail of the PKCS#8 DER.
        der = openssl("pkey", "-outform", "DER", input=net.sender_ed25519_key.private_pem)
        return SENDER_ED25519_SELECTOR.encode(), base64.b64encode(der[-32:]), b"ed25519-sha256"
    return SENDER_DKIM_SELECTOR.encode(), net.sender_key.private_pem, b"rsa-sha256"


def compose(net, p: Profile) -> tuple[bytes, str]:
    """The profile's message as it leaves the sender, signed; and its Message-ID."""
    msg, msgid = make_message(sender=p.author, to=ALIAS, body=p.body,
                              extra_headers=list(p.headers))
    signatures = b""
    for s in p.signers:
        selector, key, algorithm = signing_key(net, s)
        sig = dkim.sign(msg, selector, s.domain.encode(), key, canonicalize=s.canon,
                        signature_algorithm=algorithm, include_headers=SIGNED,
                        length=s.length)
        signatures = sig + signatures
    return signatures + msg, msgid


def peer_ip(t) -> str:
    """The sink's record of the client, str((host, port)): the address tambo connected from."""
    return str(ast.literal_eval(t.peer)[0])


# --------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------


@pytest.fixture
def fenv(renv, net):
    """example.test with its DKIM keys (sel1 RSA, sel2 Ed25519), SRS, and the alias."""
    install_dkim_keys(renv, net)
    renv.write_config(srs_secret="sender-profiles-srs-secret")
    renv.write_aliases(f"{ALIAS.split('@')[0]}: carol@remote1.test\n")
    return renv


@pytest.mark.parametrize("p", PROFILES, ids=[p.id for p in PROFILES])
def test_sender_profile_forwarded_as_a_receiver_wants_it(fenv, net, p):
    message, msgid = compose(net, p)
    origin = evaluate(net, message, p.mail_from, p.helo, "127.0.0.1")
    assert (origin.dmarc, origin.policy) == p.origin, \
        f"the zone is not as the profile says: {origin}"
    assert all(ok for _, _, ok in origin.dkim), f"the test's own signatures fail: {origin}"
    # The rewrite is expected exactly where DMARC passed through SPF alone under
    # quarantine/reject (SPEC §8).
    assert p.rewritten == (origin.dmarc == "pass" and not origin.dkim_aligned
                           and origin.policy in ("quarantine", "reject")), origin
    fenv.start()
    reply = send_raw(fenv.smtp_port, p.mail_from, [ALIAS], message, mail_params=p.mail_params,
                     helo=p.helo)
    if p.refused:
        check_refused(fenv, net, reply, msgid)
        return
    queue_id(reply)  # a 250 "queued as"
    [t] = net.sink("remote1").wait(1, msgid, tambo=fenv)
    assert t.rcpt_tos == ["carol@remote1.test"], t.rcpt_tos
    if p.mail_from:
        # SRS (SPEC §8): the envelope sender is the forwarding domain's, which SPF passes.
        assert re.fullmatch(r"SRS0=[^@]+@example\.test", t.mail_from), t.mail_from
    else:
        assert t.mail_from == "", "the null sender must stay null"
    if "8BITMIME" in p.mail_params:
        assert "BODY=8BITMIME" in [o.upper() for o in t.mail_options], t.mail_options
    got = evaluate(net, t.data, t.mail_from, t.helo, peer_ip(t))
    story = f"at the receiver: {got}\norigin: {origin}\n{t.data[:3000]!r}"
    if p.origin[1] in ("quarantine", "reject"):
        assert got.dmarc == "pass", story
    else:
        # p=none or no record: delivered is all a receiver asks.
        assert got.policy == p.origin[1], story
    if p.rewritten:
        check_rewritten(p, message, t.data, got, story)
    else:
        check_unchanged(message, t.data, origin, got, story)


def check_refused(fenv, net, reply, msgid: str) -> None:
    # RFC 7372 §3.2: 5.7.23, SPF validation failed; refused, so never queued.
    assert reply.code == 550 and reply.enhanced == "5.7.23", f"SPF fail accepted: {reply}"
    assert not fenv.queue_files(), [q.name for q in fenv.queue_files()]
    assert not wait_until(lambda: net.sink("remote1").received(msgid), 1.0), \
        f"a refused message reached the sink\n{net.sink('remote1').story()}"


def check_unchanged(message: bytes, data: bytes, origin: Judgement, got: Judgement,
                    story: str) -> None:
    assert data.endswith(message), f"not forwarded byte for byte\n{story}"
    added = {f.partition(":")[0].strip().lower() for f in header_block(data[:-len(message)])
             if f}
    assert added <= TRACE_FIELDS, f"tambo added {added - TRACE_FIELDS}\n{story}"
    # Every signature that verified at origin still does, From: and all.
    assert got.dkim == origin.dkim and got.from_domain == origin.from_domain, story


def check_rewritten(p: Profile, message: bytes, data: bytes, got: Judgement,
                    story: str) -> None:
    name = email.utils.parseaddr(p.author)[0]
    [new_from] = header_values(data, "from")
    assert email.utils.parseaddr(new_from) == (f"{name} via {FORWARDER}", ALIAS), story
    assert header_values(data, "reply-to") == [p.author], story
    assert header_values(data, "x-original-from") == [p.author], story
    assert got.from_domain == FORWARDER, story
    assert any(d == FORWARDER and ok for d, _, ok in got.dkim), \
        f"no valid DKIM signature d={FORWARDER}\n{story}"
    assert got.dkim_aligned, story
    # Only the header section changed.
    assert data.endswith(message.split(b"\r\n\r\n", 1)[1]), f"body changed\n{story}"
