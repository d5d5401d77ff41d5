"""SNI: the certificate comes from conf/certs/<name>/ by the name the client asks for; a client
without SNI (most MTAs) gets the one named like `hostname` (SPEC §2, §7)."""

from __future__ import annotations

import socket
import ssl
import subprocess

from helpers import HOSTNAME, SmtpConn, TIMEOUT


def make_cert(folder, name: str) -> None:
    folder.mkdir(parents=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}",
         "-keyout", str(folder / "privkey.pem"), "-out", str(folder / "fullchain.pem")],
        check=True, capture_output=True, timeout=30,
    )


def served_name(port: int, sni: str | None) -> str:
    """The subject CN of the certificate served on the implicit-TLS port for `sni`."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni) as tls:
            der = tls.getpeercert(binary_form=True)
    pem = ssl.DER_cert_to_PEM_cert(der)
    out = subprocess.run(["openssl", "x509", "-noout", "-subject", "-nameopt", "RFC2253"],
                         input=pem.encode(), capture_output=True, check=True, timeout=30)
    return out.stdout.decode().strip().removeprefix("subject=").removeprefix("CN=")


def test_certificate_chosen_by_sni(env):
    certs = env.dir / "conf" / "certs"
    make_cert(certs / HOSTNAME, HOSTNAME)
    make_cert(certs / "mail.other.test", "mail.other.test")
    env.start()
    assert served_name(env.submission_tls_port, "mail.other.test") == "mail.other.test"
    assert served_name(env.submission_tls_port, HOSTNAME) == HOSTNAME
    # No SNI, or a name we have no certificate for: the one for `hostname`.
    assert served_name(env.submission_tls_port, None) == HOSTNAME
    assert served_name(env.submission_tls_port, "unknown.test") == HOSTNAME
    # STARTTLS on port 25 uses the same selection.
    with SmtpConn(env.smtp_port) as c:
        c.ehlo()
        c.starttls()
        assert c.ehlo()
    # A configured certificate means no self-signed one is generated.
    assert not (env.data_dir / "certs" / "self-signed").exists()
