"""The processes under test and around them: config folders, start, readiness, /proc figures, stop.

Both servers run in their own mount namespace (`unshare -m`) with a private /etc/resolv.conf
that names the benchmark's DNS server (dnsserver.py), so both resolve sink.test the same way:
chasquid has no DNS setting and uses the system resolver; tambo gets `dns_servers` as well,
for clarity.
"""

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
DNS_IP = "127.0.0.153"
SINK_IP = "127.0.0.2"
DOMAIN = "bench.test"
HOSTNAME = "mx.bench.test"
USER = "bench"
PASSWORD = "bench-password-not-secret"
FORWARD_ALIAS = "fwd"
FORWARD_TARGET = "x@sink.test"
# The domain's mailboxes of the lockstep phases (smtp-source), besides USER.
DOMAIN_USERS = [f"user{i}" for i in range(10)]
# smtp-source -r 5 -t fwd@... names its recipients fwd, 2fwd, ..., 5fwd: each an alias to its
# own address at the sink.
ALIASES = [(FORWARD_ALIAS, FORWARD_TARGET)] + [(f"{i}fwd", f"x{i}@sink.test") for i in range(2, 6)]
# The envelope and From: domain of the load (bench.py's SENDER).
SENDER_DOMAIN = "client.test"


class Proc:
    """A child we started, in its own process group so its children (MDAs) stop with it."""

    def __init__(self, name, argv, log_path, env=None):
        self.name = name
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,
                preexec_fn=_raise_child_fd_limit,
            )

    @property
    def pid(self):
        return self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def stop(self, grace_s=5):
        if self.popen.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.popen.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def log_tail(self, lines=15):
        try:
            with open(self.log_path, "rb") as f:
                return b"".join(f.readlines()[-lines:]).decode("utf-8", "replace")
        except OSError:
            return ""


def _raise_child_fd_limit():
    # 1,000 idle connections need more than the usual 1,024 descriptors.
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def in_namespace(resolv_conf, argv):
    """argv run with `resolv_conf` bind-mounted on /etc/resolv.conf, in a private mount
    namespace (util-linux unshare makes propagation private, so the host never sees it).
    `exec` keeps the pid, so /proc/<pid> is the server itself."""
    script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
    return ["unshare", "-m", "--", "sh", "-c", script, resolv_conf, *argv]


def free_port(ip="127.0.0.1"):
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def wait_smtp(port, proc, deadline_s=20, ip="127.0.0.1"):
    """Until the server greets with 220, or raise with its log tail."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.log_tail()}")
        try:
            with socket.create_connection((ip, port), timeout=2) as s:
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} did not greet on port {port} in {deadline_s}s:\n"
                       f"{proc.log_tail()}")


def cpu_times(pid):
    """(user, system) seconds of the process plus its reaped children (chasquid's MDAs)."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name may hold spaces; the fields we need come after its ')'.
        fields = f.read().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + cutime) / CLK_TCK, (stime + cstime) / CLK_TCK


def tree_pids(pid):
    """`pid` and every live process below it (chasquid's MDAs, Postfix's daemons)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def tree_cpu_times(pid):
    """(user, system) seconds of `pid` and every live process below it, each with its reaped
    children: a process that exits moves its time into its parent's cutime/cstime, so the
    sum stays whole (Postfix's master reaps its daemons)."""
    user = sys_ = 0.0
    for p in tree_pids(pid):
        try:
            u, s = cpu_times(p)
        except (OSError, IndexError):
            continue
        user, sys_ = user + u, sys_ + s
    return user, sys_


def tree_rss_kib(pid):
    """VmRSS summed over `pid` and every live process below it."""
    total = 0
    for p in tree_pids(pid):
        try:
            total += rss_kib(p)
        except (OSError, RuntimeError):
            continue  # exited, or a zombie without memory
    return total


def tree_pss_kib(pid):
    """Pss (proc(5): each shared page divided among the processes that map it) summed over
    `pid` and every live process below it: the memory of a many-process server (Postfix)
    without counting its shared libraries once per process."""
    total = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += next((int(ln.split()[1]) for ln in f if ln.startswith("Pss:")), 0)
        except OSError:
            continue
    return total


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def make_cert(dest_dir, log):
    os.makedirs(dest_dir, exist_ok=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", f"/CN={HOSTNAME}",
         "-addext", f"subjectAltName=DNS:{HOSTNAME}",
         "-keyout", os.path.join(dest_dir, "privkey.pem"),
         "-out", os.path.join(dest_dir, "fullchain.pem")],
        check=True, stdout=log, stderr=log, timeout=30,
    )


# --- DNS --------------------------------------------------------------------------------------

def start_dns(root):
    """dnsserver.py on DNS_IP:53, authoritative for *.test: MX sink.test -> mx.sink.test -> SINK_IP,
    SPF and DMARC TXT records for the sender's domain; every other .test name is NXDOMAIN
    with the zone's SOA, as a real zone answers. TTL 300 s for all of them."""
    argv = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "dnsserver.py"),
            DNS_IP, "53", SINK_IP, SENDER_DOMAIN]
    proc = Proc("dns", argv, os.path.join(root, "dns.log"))
    end = time.monotonic() + 10
    while time.monotonic() < end:
        if not proc.alive():
            raise RuntimeError(f"dnsserver.py exited:\n{proc.log_tail()}")
        if _mx_answers(DNS_IP, "sink.test"):
            return proc
        time.sleep(0.1)
    proc.stop()
    raise RuntimeError(f"dnsserver.py did not answer MX sink.test:\n{proc.log_tail()}")


def _mx_answers(server, name):
    """True when `server` answers an MX query for `name` with at least one record."""
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    query = struct.pack(">HHHHHH", 0x6265, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", 15, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        try:
            s.sendto(query, (server, 53))
            reply = s.recv(512)
        except OSError:
            return False
    return len(reply) >= 12 and struct.unpack(">H", reply[6:8])[0] > 0


def write_resolv_conf(root):
    path = os.path.join(root, "resolv.conf")
    with open(path, "w") as f:
        f.write(f"nameserver {DNS_IP}\noptions timeout:2 attempts:2\n")
    return path


def write_aliases(path):
    with open(path, "w") as f:
        f.write("".join(f"{alias}: {target}\n" for alias, target in ALIASES))


# --- tambo -----------------------------------------------------------------------------------

class Tambo:
    name = "tambo"

    def __init__(self, binary, root, sink_port, resolv_conf, log):
        self.dir = os.path.join(root, "tambo")
        self.binary = binary
        self.port = free_port()
        self.sink_port = sink_port
        self.resolv_conf = resolv_conf
        self.log = log
        self.proc = None

    def configure(self):
        conf = os.path.join(self.dir, "conf")
        os.makedirs(os.path.join(self.dir, "domains", DOMAIN))
        make_cert(os.path.join(conf, "certs", HOSTNAME), self.log)
        settings = {
            "hostname": HOSTNAME,
            "smtp_listen": [f"127.0.0.1:{self.port}"],
            "submission_listen": [f"127.0.0.1:{free_port()}"],
            "submission_tls_listen": [f"127.0.0.1:{free_port()}"],
            "data_dir": "data",
            "dns_servers": [f"{DNS_IP}:53"],
            "outbound_smtp_port": self.sink_port,
            # Every bench connection (1,000 idle ones among them) comes from 127.0.0.1: the
            # per-address cap (default 50) would refuse them.
            "max_connections_per_address": 4000,
        }
        with open(os.path.join(conf, "tambo.json"), "w") as f:
            json.dump(settings, f, indent=2)
        write_aliases(os.path.join(self.dir, "domains", DOMAIN, "aliases"))
        for user in [USER, *DOMAIN_USERS]:
            subprocess.run(
                [self.binary, "-C", self.dir, "util", "user-add", f"{user}@{DOMAIN}",
                 "--password", PASSWORD],
                check=True, stdout=self.log, stderr=self.log, timeout=60,
            )

    def start(self):
        env = dict(os.environ, RUST_LOG="info")
        argv = in_namespace(self.resolv_conf, [self.binary, "-C", self.dir, "serve"])
        self.proc = Proc("tambo", argv, os.path.join(self.dir, "tambo.log"), env=env)
        wait_smtp(self.port, self.proc)

    def maildir_new(self, user=USER):
        return os.path.join(self.dir, "data", "mail", DOMAIN, user, "new")

    def says_forwarding_missing(self):
        """The runner's deferral text while remote delivery is not wired in (queue/runner.rs)."""
        with open(self.proc.log_path, "rb") as f:
            return b"remote delivery is not available yet" in f.read()


# --- chasquid --------------------------------------------------------------------------------

class Chasquid:
    name = "chasquid"

    def __init__(self, mda, root, sink_port, resolv_conf, log):
        self.dir = os.path.join(root, "chasquid")
        self.mda = mda
        self.port = free_port()
        self.sink_port = sink_port
        self.resolv_conf = resolv_conf
        self.log = log
        self.proc = None

    def configure(self):
        os.makedirs(os.path.join(self.dir, "domains", DOMAIN))
        make_cert(os.path.join(self.dir, "certs", HOSTNAME), self.log)
        lines = [
            f'hostname: "{HOSTNAME}"',
            f'smtp_address: "127.0.0.1:{self.port}"',
            f'submission_address: "127.0.0.1:{free_port()}"',
            f'submission_over_tls_address: "127.0.0.1:{free_port()}"',
            f'monitoring_address: "127.0.0.1:{free_port()}"',
            f'data_dir: "{self.dir}/data"',
            f'mail_log_path: "{self.dir}/mail.log"',
            f'mail_delivery_agent_bin: "{self.mda}"',
            # Same layout as tambo's data_dir/mail/<domain>/<user>/.
            f'mail_delivery_agent_args: "{self.dir}/mail/%to_domain%/%to_user%"',
        ]
        with open(os.path.join(self.dir, "chasquid.conf"), "w") as f:
            f.write("\n".join(lines) + "\n")
        write_aliases(os.path.join(self.dir, "domains", DOMAIN, "aliases"))
        for user in [USER, *DOMAIN_USERS]:
            subprocess.run(
                ["chasquid-util", f"--configdir={self.dir}", "user-add", f"{user}@{DOMAIN}",
                 f"--password={PASSWORD}"],
                check=True, stdout=self.log, stderr=self.log, timeout=60,
            )

    def start(self):
        argv = in_namespace(self.resolv_conf, [
            "chasquid", f"--config_dir={self.dir}",
            f"--testing__outgoing_smtp_port={self.sink_port}",
        ])
        self.proc = Proc("chasquid", argv, os.path.join(self.dir, "chasquid.log"))
        wait_smtp(self.port, self.proc)

    def maildir_new(self, user=USER):
        return os.path.join(self.dir, "mail", DOMAIN, user, "new")

    def says_forwarding_missing(self):
        return False
