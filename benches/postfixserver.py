"""Debian's Postfix as a third server of the SMTP bench: its own instance, from a config
folder the bench writes (never /etc/postfix), with its own queue, on a loopback port.

Mail for the bench's users goes through virtual(8) into Maildirs (virtual_mailbox_maps with a
trailing `/`), aliases through virtual_alias_maps to the sink, reached by smtp(8) through
transport_maps (`[127.0.0.2]:<port>`: no DNS). Every other setting is Postfix's built-in
default, the queue's fsync among them. Postfix is many processes (master, smtpd, cleanup,
qmgr, trivial-rewrite, virtual, smtp, ...): its CPU and RSS are summed over the master and
every process below it.
"""

import os
import signal
import subprocess
import time

import servers

# virtual(8) writes the Maildirs as this user (Debian's `nobody`; virtual_minimum_uid is 100).
MAIL_UID = MAIL_GID = 65534
MASTER_CF = "/usr/share/postfix/master.cf.dist"
# The last service of master.cf.dist that Postfix itself needs; the rest are examples.
LAST_SERVICE = "postlog"


class PostfixProc:
    """The running instance: `pid` is the master's, which every Postfix process descends from
    (master calls setsid, so they all share its process group)."""

    name = "postfix"

    def __init__(self, conf, queue, log_path, script):
        self.conf = conf
        self.log_path = log_path
        self.script = script  # `postfix start-fg`, the master's parent
        self.pid_file = os.path.join(queue, "pid", "master.pid")

    @property
    def pid(self):
        with open(self.pid_file) as f:
            return int(f.read().split()[0])

    def alive(self):
        try:
            return os.path.exists(f"/proc/{self.pid}")
        except (OSError, ValueError):
            return self.script.alive()

    def log_tail(self, lines=15):
        return servers.Proc.log_tail(self, lines)

    def stop(self, grace_s=10):
        try:
            master = self.pid
        except (OSError, ValueError):
            master = None
        subprocess.run(["postfix", "-c", self.conf, "stop"], capture_output=True, timeout=30)
        # The daemons leave on their own a moment after the master; all of them, and only
        # they, are in the master's process group.
        end = time.monotonic() + grace_s
        while master and group_alive(master) and time.monotonic() < end:
            time.sleep(0.1)
        if master and group_alive(master):
            try:
                os.killpg(master, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.script.stop()


def group_alive(pgid):
    """Whether a process of group `pgid` is left."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


class Postfix:
    name = "postfix"

    def __init__(self, root, sink_port, log, users, aliases):
        self.dir = os.path.join(root, "postfix")
        self.conf = os.path.join(self.dir, "conf")
        self.queue = os.path.join(self.dir, "queue")
        self.mail = os.path.join(self.dir, "mail")
        self.port = servers.free_port()
        self.sink_port = sink_port
        self.log = log
        self.users = users
        self.aliases = aliases
        self.proc = None

    def configure(self):
        for d in (self.conf, self.queue, os.path.join(self.dir, "data"), self.mail):
            os.makedirs(d, exist_ok=True)
        # Postfix's daemons run as `postfix` and `nobody`: they must get through the folders.
        for d in (os.path.dirname(self.dir), self.dir):
            os.chmod(d, 0o755)
        subprocess.run(["chown", "postfix", os.path.join(self.dir, "data")], check=True)
        os.chown(self.mail, MAIL_UID, MAIL_GID)
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.write(self.main_cf())
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write(self.master_cf())
        tables = {
            "vmailbox": "".join(f"{u}@{servers.DOMAIN} {servers.DOMAIN}/{u}/\n"
                                for u in self.users),
            "virtual": "".join(f"{a}@{servers.DOMAIN} {t}\n" for a, t in self.aliases),
            "transport": f"sink.test smtp:[{servers.SINK_IP}]:{self.sink_port}\n",
        }
        for name, text in tables.items():
            with open(os.path.join(self.conf, name), "w") as f:
                f.write(text)
        # `postfix check` makes the queue's folders with their owners and modes.
        subprocess.run(["postfix", "-c", self.conf, "check"], check=True, stdout=self.log,
                       stderr=self.log, timeout=60)

    def main_cf(self):
        c = self.conf
        return "\n".join([
            "compatibility_level = 3.6",
            f"queue_directory = {self.queue}",
            f"data_directory = {self.dir}/data",
            f"maillog_file = {self.dir}/postfix.log",
            f"myhostname = {servers.HOSTNAME}",
            f"mydomain = {servers.DOMAIN}",
            "myorigin = $myhostname",
            "mydestination =",
            "inet_interfaces = 127.0.0.1",
            "inet_protocols = ipv4",
            # The load comes from 127.0.0.1 as from the Internet: not a trusted network.
            f"mynetworks = {servers.SINK_IP}/32",
            "alias_maps =",
            "alias_database =",
            "local_recipient_maps =",
            f"virtual_mailbox_domains = {servers.DOMAIN}",
            f"virtual_mailbox_base = {self.mail}",
            f"virtual_mailbox_maps = texthash:{c}/vmailbox",
            f"virtual_uid_maps = static:{MAIL_UID}",
            f"virtual_gid_maps = static:{MAIL_GID}",
            f"virtual_alias_maps = texthash:{c}/virtual",
            f"transport_maps = texthash:{c}/transport",
            # The large-message phases (25 MiB), as tambo's and chasquid's 50 MB defaults.
            "message_size_limit = 52428800",
            "virtual_mailbox_limit = 0",
            "",
        ])

    def master_cf(self):
        """Debian's master.cf.dist up to postlogd, without chroot (the chroot wants copies of
        /etc files in the queue folder), smtpd on the bench's port."""
        out = []
        with open(MASTER_CF) as f:
            for line in f:
                if not line.strip() or line.startswith("#"):
                    continue
                if line[0].isspace():
                    out.append(line.rstrip("\n"))
                    continue
                fields = line.split()
                if fields[0] == "smtp" and fields[1] == "inet":
                    fields[0] = f"127.0.0.1:{self.port}"
                if len(fields) >= 8:
                    fields[4] = "n"
                out.append("  ".join(fields))
                if fields[0] == LAST_SERVICE:
                    break
        return "\n".join(out) + "\n"

    def start(self):
        script = servers.Proc("postfix-start", ["postfix", "-c", self.conf, "start-fg"],
                              os.path.join(self.dir, "start.log"))
        self.proc = PostfixProc(self.conf, self.queue, os.path.join(self.dir, "postfix.log"),
                                script)
        end = time.monotonic() + 20
        while not os.path.exists(self.proc.pid_file):
            if time.monotonic() > end or not script.alive():
                raise RuntimeError(f"postfix did not start:\n{script.log_tail()}")
            time.sleep(0.1)
        servers.wait_smtp(self.port, self.proc)

    def maildir_new(self, user=servers.USER):
        return os.path.join(self.mail, servers.DOMAIN, user, "new")

    def says_forwarding_missing(self):
        return False
