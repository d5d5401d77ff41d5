#!/usr/bin/env bash
# Installs what the tests need beyond Rust on Debian 12, with apt-get: the C tool chain of the
# build, and the end-to-end suite's Python and real peers. The one list of those packages.
#
#   sudo ./tests/install-deps.sh            install them (root: apt-get update + install)
#   ./tests/install-deps.sh --missing       print those not installed, one a line (no root)
#
# ./tests/run.sh checks with --missing first, and installs when run as root.
set -euo pipefail

PACKAGES=(
    ca-certificates            # HTTPS for cargo's crate downloads
    gcc make pkg-config        # aws-lc-sys (rustls' crypto provider) builds C code
    git                        # tests/readme.sh clones the repository, as the README's reader does
    openssl                    # test keys and certificates (unit and end-to-end tests)
    python3                    # Debian's, which tests/run.sh runs pytest with: it has the modules below
    python3-pytest             # runs the end-to-end suite (tests/e2e)
    swaks                      # a real SMTP client: test_tls_auth.py and the README's commands
    libnet-ssleay-perl         # swaks' TLS (a Recommends of swaks, which --no-install-recommends skips)
    iproute2                   # `ip`: a network namespace of the test's own (test_first_hour.py)
    python3-aiosmtpd           # the sink MTAs on 127.0.0.x that tambo delivers to
    dnsmasq-base               # DNS on loopback: MX, SPF, DKIM, DMARC, MTA-STS records (unit and e2e)
    python3-dkim               # dkimpy: DKIM signing and verification, arc_verify (unit and e2e)
    python3-dnspython          # the tests' own DNS queries (zones, the dkimpy dnsfunc)
    python3-authres            # dkimpy's ARC signing, to make test chains
    postsrsd                   # the SRS cross-check (unit and e2e)
    dovecot-core dovecot-lmtpd # Dovecot's LMTP server, a real LMTP peer (unit and e2e)
    dovecot-imapd              # Dovecot's IMAP server: the ENVELOPE/BODYSTRUCTURE cross-check (unit),
                               # and the same Maildir served before and after tambo (e2e)
    dovecot-pop3d              # Dovecot's POP3 server: the same UIDLs on the same Maildir (test_pop3.py)
    fetchmail                  # a real POP3 client: STLS/995, keep and UIDLs (test_pop3.py)
    getmail6                   # another one: UIDL-based "new mail only" runs (test_pop3.py)
    isync                      # mbsync, a real IMAP client syncing both ways (test_imap_clients.py)
    offlineimap3               # offlineimap, another one (test_imap_clients.py)
    neomutt tmux               # a real IMAP mail reader, driven in a tmux pane (test_imap_clients.py)
    python3-prometheus-client  # its parser reads /metrics
    spamd spamc                # SpamAssassin: contrib/spamassassin/post-data against a real spamd (e2e)
    chasquid                   # chasquid-util (a real chasquid folder to import) and its example hook
    systemd                    # systemd-socket-activate (LISTEN_FDS sockets)
    pebble                     # Let's Encrypt's test ACME server: certificates issued, renewed and
                               # refused for real, tls-alpn-01 and http-01 (test_acme.py)
    roundcube-core             # Roundcube, a real webmail client (test_roundcube.py); its Depends bring PHP's
                               # intl, mbstring, xml and PEAR mail modules, and `php`, which --no-install-recommends
                               # satisfies with libapache2-mod-php (the module only: no Apache, none is needed)
    roundcube-sqlite3          # Roundcube's database, a sqlite file in the test's temp folder
    php-cli php-sqlite3        # `php -S`, PHP's built-in web server, serves Roundcube; its sqlite driver
    chromium chromium-driver   # headless chromium and chromedriver drive Roundcube's pages (test_roundcube.py);
                               # chromium-sandbox (a Recommends) is not needed: it runs with --no-sandbox
    python3-selenium           # the WebDriver client that drives chromedriver
)

# Packages of PACKAGES that dpkg does not list as installed.
missing() {
    local listed installed p
    # dpkg-query exits 1 when it knows some name not at all: those are missing too.
    listed=$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${PACKAGES[@]}" 2>/dev/null || true)
    # "ii": wanted installed, and installed (not just unpacked, nor removed leaving its config).
    installed=$(awk '$2 == "ii" { print $1 }' <<<"$listed")
    for p in "${PACKAGES[@]}"; do
        grep -qxF -- "$p" <<<"$installed" || echo "$p"
    done
}

case "${1:-}" in
--missing)
    missing
    exit 0
    ;;
"") ;;
*)
    echo "usage: $0 [--missing]" >&2
    exit 2
    ;;
esac

if [ "$(id -u)" != 0 ]; then
    echo "$0: apt-get needs root: sudo $0" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${PACKAGES[@]}"
