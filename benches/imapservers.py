"""The two IMAP servers of benches/imap.py: tambo (`imaps_listen`, and `pop3s_listen` for the
POP3 phase) and Debian's Dovecot 2.3 (imap and pop3) with
a config of the benchmark's own. Each has its own copy of the same Maildir, the same
self-signed certificate, the same two users with the same passwords and equally costly
password hashes; both start fresh every round, so each round's first SELECT is cold.

Also: password hashes in both formats, and /proc readings (PSS, CPU) of a server with all its
processes.
"""

import base64
import ctypes
import ctypes.util
import hashlib
import json
import os
import poplib
import shutil
import ssl
import subprocess
import time

import servers
from imapclient import Imap

DOMAIN = servers.DOMAIN
HOSTNAME = servers.HOSTNAME
PASSWORD = servers.PASSWORD
# The user with the mail: its hash has the cost tambo's `util user-add` gives (SPEC §5).
USER = f"{servers.USER}@{DOMAIN}"
# A user with a nearly free hash of the same kind, for logins that measure the servers
# rather than scrypt. Its mailbox is empty.
LIGHT_USER = f"light@{DOMAIN}"
# scrypt cost (log2 N) of each user's hash; r=8, p=1 for both.
SCRYPT_LOG_N = {USER: 15, LIGHT_USER: 4}
# Dovecot's mail processes run as nobody (it refuses root); its files are given to it.
MAIL_UID = MAIL_GID = 65534
DOVECOT_DH = "/usr/share/dovecot/dh.pem"


# --- password hashes -------------------------------------------------------------------------

ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _itoa64_30(value):
    """A 30-bit value as five itoa64 characters, least significant first (the `$7$` format)."""
    return "".join(ITOA64[(value >> (6 * i)) & 63] for i in range(5))


def scrypt_crypt(password, log_n, salt):
    """The `$7$` (scrypt) crypt(3) string Dovecot's CRYPT scheme checks through libxcrypt, of
    cost N = 2^log_n, r = 8, p = 1."""
    libcrypt = ctypes.CDLL(ctypes.util.find_library("crypt"))
    libcrypt.crypt.restype = ctypes.c_char_p
    libcrypt.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    setting = f"$7${ITOA64[log_n]}{_itoa64_30(8)}{_itoa64_30(1)}{salt}"
    out = libcrypt.crypt(password.encode(), setting.encode())
    if not out or not out.startswith(b"$7$"):
        raise RuntimeError("libcrypt cannot make $7$ (scrypt) hashes")
    return out.decode()


def scrypt_phc(password, log_n, salt):
    """The PHC string tambo's users file holds: `$scrypt$ln=..,r=8,p=1$<salt>$<key>`."""
    key = hashlib.scrypt(password.encode(), salt=salt.encode(), n=1 << log_n, r=8, p=1,
                         maxmem=256 << 20, dklen=32)

    def b64(b):
        return base64.b64encode(b).decode().rstrip("=")

    return f"$scrypt$ln={log_n},r=8,p=1${b64(salt.encode())}${b64(key)}"


# --- /proc -----------------------------------------------------------------------------------

def pss_kib(pid):
    """Proportional set size: shared pages divided among the processes that map them, so the
    sum over many processes is what they cost together."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise RuntimeError(f"no Pss for pid {pid}")


def session_pids(sid):
    """Processes of the session `sid` (a server we started with its own session)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[3]) == sid:  # field 6 of proc(5): session id
            out.append(int(name))
    return out


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def memory(sid):
    """{"pss_kib": total, "by_process": {name: [count, kib]}} over a server's processes."""
    total, by = 0, {}
    for pid in session_pids(sid):
        try:
            kib = pss_kib(pid)
        except (OSError, RuntimeError):
            continue
        total += kib
        name = comm(pid)
        count, sum_kib = by.get(name, (0, 0))
        by[name] = (count + 1, sum_kib + kib)
    return {"pss_kib": total, "by_process": by}


def cpu_s(sid):
    """CPU seconds of a server's processes so far: those alive, plus the ones the server
    process (the session leader) has reaped (Dovecot's per-login processes)."""
    total = 0.0
    for pid in session_pids(sid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
        total += utime + stime + (cutime + cstime if pid == sid else 0)
    return total / servers.CLK_TCK


# --- common ----------------------------------------------------------------------------------

def copy_maildir(template, dest, owner=None):
    """A fresh copy of the template Maildir (file times kept: they are the INTERNALDATEs)."""
    if os.path.exists(dest):
        shutil.rmtree(dest)
    shutil.copytree(template, dest)
    if owner is not None:
        for path, dirs, files in os.walk(dest):
            os.chown(path, *owner)
            for f in files:
                os.chown(os.path.join(path, f), *owner)


def pop3s(port, timeout=30):
    """A POP3S connection (the certificate is self-signed: only the channel matters)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return poplib.POP3_SSL("127.0.0.1", port, context=ctx, timeout=timeout)


def wait_pop3s(port, proc, deadline_s=30):
    """Until the server greets over POP3S, or raise with its log tail."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.log_tail()}")
        try:
            pop3s(port, timeout=5).quit()
            return
        except (OSError, poplib.error_proto):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} did not greet on POP3S port {port} in {deadline_s}s:\n"
                       f"{proc.log_tail()}")


def wait_imaps(port, proc, deadline_s=30):
    """Until the server greets over TLS, or raise with its log tail."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.log_tail()}")
        try:
            with Imap(port, timeout=5) as c:
                return c.tls()
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} did not greet on port {port} in {deadline_s}s:\n"
                       f"{proc.log_tail()}")


class Server:
    """What both servers share: a folder, a port, a process, a fresh copy of the mail."""

    name = ""

    def __init__(self, root, log):
        self.dir = os.path.join(root, self.name)
        self.port = servers.free_port()
        self.pop3_port = servers.free_port()
        self.log = log
        self.proc = None
        self.tls = None

    @property
    def sid(self):
        return self.proc.pid

    def restart(self, template):
        """Stops the server, gives it a fresh copy of the mail, starts it again."""
        self.stop()
        self.reset_mail(template)
        self.start()

    def stop(self):
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def memory(self):
        return memory(self.sid)

    def cpu_s(self):
        return cpu_s(self.sid)


# --- tambo -----------------------------------------------------------------------------------

class Tambo(Server):
    name = "tambo"

    def __init__(self, binary, root, log):
        super().__init__(root, log)
        self.binary = binary

    def configure(self):
        """Defaults of SPEC §3 except the listeners: IMAPS and POP3S on free ports, SMTP on
        another (it cannot be turned off), submission off."""
        conf = os.path.join(self.dir, "conf")
        os.makedirs(os.path.join(self.dir, "domains", DOMAIN))
        servers.make_cert(os.path.join(conf, "certs", HOSTNAME), self.log)
        settings = {
            "hostname": HOSTNAME,
            "smtp_listen": [f"127.0.0.1:{servers.free_port()}"],
            "submission_listen": [],
            "submission_tls_listen": [],
            "imaps_listen": [f"127.0.0.1:{self.port}"],
            "pop3s_listen": [f"127.0.0.1:{self.pop3_port}"],
            "data_dir": "data",
        }
        with open(os.path.join(conf, "tambo.json"), "w") as f:
            json.dump(settings, f, indent=2)
        # The real way for the user with the mail; the light user's hash written beside it.
        subprocess.run([self.binary, "-C", self.dir, "util", "user-add", USER,
                        "--password", PASSWORD],
                       check=True, stdout=self.log, stderr=self.log, timeout=60)
        users_path = os.path.join(self.dir, "domains", DOMAIN, "users")
        with open(users_path) as f:
            users = json.load(f)
        local = USER.split("@")[0]
        want = f"$scrypt$ln={SCRYPT_LOG_N[USER]},r=8,p=1$"
        if not users[local].startswith(want):
            raise RuntimeError(f"user-add made {users[local][:30]}..., not {want}...: "
                               "update SCRYPT_LOG_N so that Dovecot's hash costs the same")
        light = LIGHT_USER.split("@")[0]
        users[light] = scrypt_phc(PASSWORD, SCRYPT_LOG_N[LIGHT_USER], "lightsaltlightsa")
        with open(users_path, "w") as f:
            json.dump(users, f, indent=2)
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(self.mail_dir(LIGHT_USER), sub), exist_ok=True)

    def cert_paths(self):
        d = os.path.join(self.dir, "conf", "certs", HOSTNAME)
        return os.path.join(d, "fullchain.pem"), os.path.join(d, "privkey.pem")

    def mail_dir(self, user=USER):
        local, domain = user.split("@")
        return os.path.join(self.dir, "data", "mail", domain, local)

    def reset_mail(self, template):
        # The whole user folder goes, with tambo's uidlist and cache: the next SELECT is cold.
        copy_maildir(template, self.mail_dir())

    def start(self):
        env = dict(os.environ, RUST_LOG="info")
        self.proc = servers.Proc("tambo", [self.binary, "-C", self.dir, "serve"],
                                 os.path.join(self.dir, "tambo.log"), env=env)
        self.tls = wait_imaps(self.port, self.proc)
        wait_pop3s(self.pop3_port, self.proc)


# --- Dovecot ---------------------------------------------------------------------------------

DOVECOT_CONF = """\
# benches/imap.py's own Dovecot: built-in defaults (Debian's package) except what follows.
base_dir = {run}
state_dir = {state}
instance_name = bench-{port}
log_path = /dev/stderr
protocols = imap pop3
listen = 127.0.0.1
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
{dh}
passdb {{
  driver = passwd-file
  args = scheme=CRYPT username_format=%u {passwd}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={home}/%d/%n
}}
mail_location = maildir:~/Maildir
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {port}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {pop3_port}
    ssl = yes
  }}
}}
"""


class Dovecot(Server):
    """Dovecot as Debian ships it: one imap-login process per connection (it also carries the
    TLS of the session after login), one imap process per logged-in session, auth workers for
    the slow password scheme. Only paths, the listener and the users differ from its
    built-in defaults."""

    name = "dovecot"

    def __init__(self, root, log, cert, key):
        super().__init__(root, log)
        self.cert, self.key = cert, key

    def configure(self):
        run, state, home = (os.path.join(self.dir, d) for d in ("run", "state", "home"))
        for d in (run, state, home):
            os.makedirs(d, exist_ok=True)
        # Dovecot's unprivileged processes (dovecot, dovenull, nobody) must reach their files.
        for d in (os.path.dirname(self.dir), self.dir, home):
            os.chmod(d, 0o755)
        passwd = os.path.join(self.dir, "passwd")
        with open(passwd, "w") as f:
            for user, log_n in SCRYPT_LOG_N.items():
                salt = hashlib.sha256(user.encode()).hexdigest()[:16]
                f.write(f"{user}:{{CRYPT}}{scrypt_crypt(PASSWORD, log_n, salt)}::::::\n")
        os.chmod(passwd, 0o644)
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(self.mail_dir(LIGHT_USER), sub), exist_ok=True)
        self._chown(os.path.join(home, DOMAIN))
        self.conf = os.path.join(self.dir, "dovecot.conf")
        with open(self.conf, "w") as f:
            f.write(DOVECOT_CONF.format(
                run=run, state=state, port=self.port, pop3_port=self.pop3_port, cert=self.cert,
                key=self.key, passwd=passwd, uid=MAIL_UID, gid=MAIL_GID, home=home,
                # Debian's 10-ssl.conf sets it; only DHE suites (not used here) need it.
                dh=f"ssl_dh = <{DOVECOT_DH}" if os.path.exists(DOVECOT_DH) else "",
            ))

    def _chown(self, top):
        os.chown(top, MAIL_UID, MAIL_GID)
        for path, dirs, files in os.walk(top):
            for name in dirs + files:
                os.chown(os.path.join(path, name), MAIL_UID, MAIL_GID)

    def mail_dir(self, user=USER):
        local, domain = user.split("@")
        return os.path.join(self.dir, "home", domain, local, "Maildir")

    def reset_mail(self, template):
        # Dovecot keeps its index and uidlist in the Maildir itself: a fresh copy is cold.
        copy_maildir(template, self.mail_dir(), owner=(MAIL_UID, MAIL_GID))

    def start(self):
        self.proc = servers.Proc("dovecot", ["dovecot", "-F", "-c", self.conf],
                                 os.path.join(self.dir, "dovecot.log"))
        self.tls = wait_imaps(self.port, self.proc)
        wait_pop3s(self.pop3_port, self.proc)

    def stop(self):
        if self.proc is None:
            return
        sid = self.proc.pid
        super().stop()
        # Children that outlive the master (they should not) go too: nothing of ours stays.
        for pid in session_pids(sid):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
