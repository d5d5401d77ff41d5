"""A deterministic Maildir of realistic messages for the IMAP benchmark (benches/imap.py).

Every message is 2-20 KiB: plain text, multipart/alternative (text and HTML) or
multipart/mixed (the alternative plus a small attachment), from a dozen senders, some with
RFC 2047 encoded names and subjects (Q and B, UTF-8 and ISO-8859-1), as a mailbox that has
been in use for a while looks. Files go to `cur/` with LF line ends and the names tambo and
Dovecot give on delivery (`<secs>.M<usecs>P<pid>.<host>,S=<size>,W=<crlf size>:2,<flags>`);
each file's mtime (its INTERNALDATE) is distinct, so the benchmark can tell which UID a
server gave to which message. The same seed gives the same bytes.
"""

import base64
import email.header
import email.utils
import os
import quopri
import random

HOST = "mx.bench.test"
# 2026-01-05 08:00:00 UTC: the first message arrives then, the others every ~10 minutes.
EPOCH = 1767600000
# The word SEARCH SUBJECT looks for: in about one subject of twelve, plain or encoded.
SEARCH_WORD = "Rechnung"

SENDERS = [
    ("Alice Martin", "alice.martin@example.com", None),
    ("Bob Okafor", "bob@okafor.example.net", None),
    ("Jürgen Müller", "j.mueller@beispiel.de", "utf-8"),
    ("Hélène Dubois", "helene.dubois@exemple.fr", "iso-8859-1"),
    ("GitHub", "notifications@github.example", None),
    ("Ola Nordmann", "ola@nordmann.example.no", None),
    ("Zoë Ångström", "zoe@angstrom.example.se", "utf-8"),
    ("Buchhaltung Schmidt GmbH", "rechnung@schmidt-gmbh.example.de", None),
    ("李小龙", "xiaolong@example.cn", "utf-8"),
    ("Mailing list digest", "list-digest@lists.example.org", None),
    ("Carmen Núñez", "carmen@nunez.example.es", "iso-8859-1"),
    ("Monitoring", "alerts@monitoring.example.com", None),
]

SUBJECTS = [
    ("Meeting notes for {day}", None),
    ("Re: Quarterly report draft", None),
    ("Fwd: Photos from the weekend", None),
    ("[dev] Build failed on main ({n})", None),
    ("Ihre Rechnung Nr. {n} für {month}", "utf-8"),
    ("Rechnung {n} - bitte prüfen", "utf-8"),
    ("Votre facture d'électricité de {month}", "iso-8859-1"),
    ("Re: Übergabe der Schlüssel am {day}", "utf-8"),
    ("Weekly digest: {n} new posts", None),
    ("Alert: disk usage above 90% on host{n}", None),
    ("Reunión del equipo: orden del día", "iso-8859-1"),
    ("Invitation: Design review @ {day} 14:00", None),
    ("Re: Re: Lunch on {day}?", None),
    ("Ihre Bestellung wurde versandt", None),
    ("会议纪要 {month}", "utf-8"),
    ("Your invoice (Rechnung) for {month} is ready", None),
    ("Pull request #{n}: fix the flaky test", None),
    ("Happy birthday!", None),
    ("Re: Contract renewal {n}", None),
    ("Neue Nachricht: Rückruf erbeten", "utf-8"),
    ("Shipping confirmation {n}", None),
    ("Aviso: mantenimiento programado el {day}", None),
    ("Reminder: timesheets due {day}", None),
    ("Travel itinerary for {month}", None),
]

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
MONTHS = ["January", "February", "März", "April", "Mai", "Juni", "July", "August"]
RECIPIENTS = ["bench@bench.test", "team@bench.test", "all-staff@bench.test"]

WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her she there been one all we their has would when if so no "
    "meeting report budget project schedule review update server mailbox message delivery "
    "invoice payment attached please thanks regards tomorrow week quarter team release draft "
    "Rechnung Zahlung bitte danke Grüße Übersicht Lieferung café résumé naïve señor mañana "
).split()

ATTACHMENTS = [
    ("application/pdf", "Rechnung_{n}.pdf"),
    ("image/png", "photo_{n}.png"),
    ("text/csv", "export_{n}.csv"),
    ("application/vnd.openxmlformats-officedocument.wordprocessingml.document",
     "Übersicht_{n}.docx"),
]


def encode_words(text, charset):
    """`text` as a header value: as is when ASCII, else RFC 2047 encoded words (the email
    package picks Q or B and splits long values, as mail clients do)."""
    if charset is None or text.isascii():
        return text
    return email.header.Header(text, charset, maxlinelen=76).encode()


def paragraph(rng, words):
    out, line = [], []
    for _ in range(words):
        line.append(rng.choice(WORDS))
        if sum(len(w) + 1 for w in line) > 68:
            out.append(" ".join(line))
            line = []
    if line:
        out.append(" ".join(line))
    return "\n".join(out)


def body_text(rng, length):
    paras = []
    while sum(len(p) + 2 for p in paras) < length:
        paras.append(paragraph(rng, rng.randint(20, 80)))
    return "\n\n".join(paras)[:max(length, 20)]


def qp(text):
    """quoted-printable with LF line ends (what the Maildir keeps)."""
    return quopri.encodestring(text.encode("utf-8")).decode("ascii")


def html_of(text):
    paras = "".join(f"<p>{p.replace(chr(10), ' ')}</p>\n" for p in text.split("\n\n"))
    return f"<html><head><meta charset=\"utf-8\"></head><body>\n{paras}</body></html>\n"


def text_part(text):
    return ("Content-Type: text/plain; charset=utf-8; format=flowed\n"
            "Content-Transfer-Encoding: quoted-printable\n\n" + qp(text) + "\n")


def html_part(text):
    return ("Content-Type: text/html; charset=utf-8\n"
            "Content-Transfer-Encoding: quoted-printable\n\n" + qp(html_of(text)) + "\n")


def multipart(subtype, boundary, parts):
    head = f'Content-Type: multipart/{subtype}; boundary="{boundary}"\n\n'
    body = "".join(f"--{boundary}\n{p}" for p in parts)
    return head + "This is a multi-part message in MIME format.\n\n" + body + f"--{boundary}--\n"


def attachment(rng, n, size):
    ctype, name = rng.choice(ATTACHMENTS)
    name = name.format(n=n)
    data = base64.encodebytes(rng.randbytes(size)).decode("ascii")
    if name.isascii():
        disposition = f'attachment; filename="{name}"'
    else:
        # RFC 2231 §4: a non-ASCII file name, as Thunderbird writes it.
        quoted = "".join(c if c.isascii() and c.isalnum() or c in "._-" else
                         "".join(f"%{b:02X}" for b in c.encode()) for c in name)
        disposition = f"attachment; filename*=UTF-8''{quoted}"
    return (f'Content-Type: {ctype}; name="{encode_words(name, "utf-8")}"\n'
            f"Content-Disposition: {disposition}\n"
            "Content-Transfer-Encoding: base64\n\n" + data)


def headers(rng, i, when, subject_text, subject_charset):
    name, addr, charset = SENDERS[rng.randrange(len(SENDERS))]
    to = rng.choice(RECIPIENTS)
    date = email.utils.formatdate(when - rng.randint(5, 600)).replace("-0000", "+0000")
    lines = [
        f"Return-Path: <{addr}>",
        "Delivered-To: bench@bench.test",
        f"Received: from mail.{addr.split('@')[1]} (mail.{addr.split('@')[1]} "
        f"[192.0.2.{i % 250 + 1}])\n\tby {HOST} (tambo) with ESMTPS id {i:08X}\n"
        f"\tfor <bench@bench.test>; {email.utils.formatdate(when).replace('-0000', '+0000')}",
        f"Date: {date}",
        f"From: {encode_words(name, charset)} <{addr}>",
        f"To: {to}",
    ]
    if rng.random() < 0.3:
        cc_name, cc_addr, cc_charset = rng.choice(SENDERS)
        lines.append(f"Cc: {encode_words(cc_name, cc_charset)} <{cc_addr}>, "
                     f"Bench <bench@bench.test>")
    lines.append(f"Subject: {encode_words(subject_text, subject_charset)}")
    lines.append(f"Message-ID: <{i}.{rng.getrandbits(48):012x}@{addr.split('@')[1]}>")
    if rng.random() < 0.4:
        lines.append(f"In-Reply-To: <{max(i - rng.randint(1, 50), 0)}.ref@bench.test>")
    if "lists" in addr or "github" in addr:
        lines.append(f"List-Id: <{addr.split('@')[0]}.lists.example.org>")
    if rng.random() < 0.5:
        sig = base64.b64encode(rng.randbytes(128)).decode()
        lines.append(f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; "
                     f"d={addr.split('@')[1]};\n\ts=sel1; h=from:to:subject:date:message-id;\n"
                     f"\tbh={base64.b64encode(rng.randbytes(32)).decode()};\n"
                     f"\tb={sig[:70]}\n\t {sig[70:]}")
    lines.append("MIME-Version: 1.0")
    return "\n".join(lines) + "\n"


def message(rng, i, when, target):
    """One message of about `target` bytes; returns (bytes, decoded subject)."""
    template, charset = rng.choice(SUBJECTS)
    subject = template.format(day=rng.choice(DAYS), month=rng.choice(MONTHS),
                              n=rng.randint(100, 99999))
    head = headers(rng, i, when, subject, charset)
    kind = rng.random()
    boundary = f"------------{rng.getrandbits(64):016x}"
    # A guess at the text length, corrected until the message is within 256 bytes of the
    # target (the text is encoded once or twice over, so its share of the size varies).
    text_len = target // 3
    for _ in range(8):
        text = body_text(random.Random(i), text_len)
        if kind < 0.25:
            body = text_part(text)
        elif kind < 0.65:
            body = multipart("alternative", boundary, [text_part(text), html_part(text)])
        else:
            att = attachment(random.Random(i), i, max(256, target // 5))
            alt = multipart("alternative", boundary + "alt", [text_part(text), html_part(text)])
            body = multipart("mixed", boundary, [alt, att])
        data = (head + body).encode("utf-8")
        if abs(len(data) - target) <= 256:
            break
        ratio = len(body) / max(text_len, 1)
        text_len = max(50, int(text_len + (target - len(data)) / max(ratio, 1.0)))
    return data, subject


def flags(rng):
    """The flags part of a Maildir name: most mail read, some answered or flagged."""
    r = rng.random()
    if r < 0.12:
        return ""
    if r < 0.25:
        return "RS"
    if r < 0.30:
        return "FS"
    return "S"


def write_maildir(root, count, seed):
    """Writes `count` messages into the Maildir `root` (cur/ new/ tmp/); returns a list of
    (internaldate, crlf size, decoded subject) in file-name order (the order of UIDs)."""
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    rng = random.Random(seed)
    catalogue = []
    when = EPOCH
    for i in range(count):
        when += rng.randint(60, 1200)
        data, subject = message(rng, i, when, rng.randint(2048 + 256, 20 * 1024 - 256))
        crlf = len(data) + data.count(b"\n")
        name = (f"{when}.M{rng.randrange(1_000_000)}P{rng.randint(1000, 60000)}.{HOST},"
                f"S={len(data)},W={crlf}:2,{flags(rng)}")
        path = os.path.join(root, "cur", name)
        with open(path, "wb") as f:
            f.write(data)
        os.utime(path, (when, when))
        catalogue.append({"internaldate": when, "size": crlf, "subject": subject})
    return catalogue


def subject_hits(catalogue, word=SEARCH_WORD):
    """How many messages SEARCH SUBJECT `word` must find (RFC 3501 §6.4.4: a case-insensitive
    substring of the decoded field)."""
    return sum(word.lower() in m["subject"].lower() for m in catalogue)


if __name__ == "__main__":
    import sys
    import tempfile

    out = tempfile.mkdtemp(prefix="mailgen.")
    cat = write_maildir(out, int(sys.argv[1]) if len(sys.argv) > 1 else 100, 1)
    sizes = [m["size"] for m in cat]
    print(f"{out}: {len(cat)} messages, {min(sizes)}-{max(sizes)} B, "
          f"{subject_hits(cat)} with {SEARCH_WORD!r} in the subject")
