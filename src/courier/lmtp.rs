//! Local delivery over LMTP (RFC 2033), e.g. to Dovecot: `unix:/path` or `host:port`.
//!
//! One connection per message, one reply per recipient after the data (RFC 2033 §4.2), so a
//! full mailbox defers only its own recipient. No STARTTLS: the LMTP server is local.

use crate::courier::DeliveryError;
use crate::courier::smtp_client::{self, Client, Deadlines, OutboundEnvelope, Protocol};
use crate::message::StoredMessage;
use std::net::{SocketAddr, ToSocketAddrs};

/// Delivers `item` (after `prepend`) to `rcpts` at `target`, each step within `deadlines`;
/// one result per rcpt, in order.
pub async fn deliver(
    target: &str,
    lhlo_name: &str,
    from: &str,
    rcpts: &[String],
    item: &StoredMessage,
    prepend: &[u8],
    deadlines: Deadlines,
) -> Vec<Result<(), DeliveryError>> {
    let client = match connect(target, deadlines).await {
        Ok(client) => client,
        Err(e) => return vec![Err(e); rcpts.len()],
    };
    let env = OutboundEnvelope {
        from,
        rcpts,
        // LMTP servers are local and take what the SMTP server took; Dovecot offers both.
        smtputf8: item.envelope.smtputf8,
        body_8bit: item.envelope.body_8bit,
    };
    smtp_client::deliver_on(client, Protocol::Lmtp, lhlo_name, &env, item, prepend).await
}

async fn connect(target: &str, deadlines: Deadlines) -> Result<Client, DeliveryError> {
    if let Some(path) = target.strip_prefix("unix:") {
        return Client::connect_unix(path, deadlines)
            .await
            .map_err(|e| e.to_delivery());
    }
    let addr = resolve(target).await?;
    Client::connect_tcp("lmtp", addr, None, deadlines)
        .await
        .map_err(|e| e.to_delivery())
}

/// `host:port`: an address, or a name for the system resolver (`localhost` in practice),
/// asked on a blocking thread.
async fn resolve(target: &str) -> Result<SocketAddr, DeliveryError> {
    let bad = |why: String| DeliveryError::temporary(format!("LMTP target {target:?}: {why}"));
    if let Ok(addr) = target.parse() {
        return Ok(addr);
    }
    let owned = target.to_string();
    let addrs = smol::unblock(move || owned.to_socket_addrs().map(Iterator::collect::<Vec<_>>));
    let addrs = addrs.await.map_err(|e| bad(e.to_string()))?;
    addrs
        .into_iter()
        .next()
        .ok_or_else(|| bad("no address".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::courier::smtp_client::sink::{Script, Sink, item, start_unix};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    const SHORT: Duration = Duration::from_secs(3);

    fn rcpts(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn oks(results: &[Result<(), DeliveryError>]) -> Vec<Option<bool>> {
        results
            .iter()
            .map(|r| r.as_ref().err().map(|e| e.permanent))
            .collect()
    }

    #[test]
    fn unix_socket_per_recipient_replies() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("lmtp");
        let script = Script {
            ehlo: "250-sink\r\n250 PIPELINING".into(),
            after_data: "250 2.0.0 saved\r\n452 4.2.2 mailbox full".into(),
            ..Script::default()
        };
        let (seen, _task) = start_unix(&socket, script);
        let item = item(dir.path(), b"Subject: x\r\n\r\nhi\r\n");
        let to = rcpts(&["a@x.test", "b@x.test"]);
        let target = format!("unix:{}", socket.display());
        let results = smol::block_on(deliver(
            &target,
            "tambo.test",
            "s@y.test",
            &to,
            &item,
            b"X-Pre: 1\r\n",
            Deadlines::uniform(SHORT),
        ));
        assert_eq!(oks(&results), [None, Some(false)]);
        let seen = seen.lock().unwrap()[0].clone();
        assert_eq!(seen.commands[0], "LHLO tambo.test");
        assert_eq!(
            seen.data.as_deref(),
            Some(&b"X-Pre: 1\r\nSubject: x\r\n\r\nhi\r\n"[..])
        );
    }

    #[test]
    fn tcp_target_and_failures() {
        let sink = Sink::start(Script {
            after_data: "250 2.0.0 a\r\n550 5.1.1 b".into(),
            ..Script::default()
        });
        let dir = tempfile::tempdir().unwrap();
        let item = item(dir.path(), b"hi\r\n");
        let to = rcpts(&["a@x.test", "b@x.test"]);
        let missing = format!("unix:{}", dir.path().join("nothing").display());
        let cases: &[(&str, &[Option<bool>])] = &[
            (&sink.addr.to_string(), &[None, Some(true)]),
            (&missing, &[Some(false), Some(false)]),
            ("no port here", &[Some(false), Some(false)]),
        ];
        for &(target, want) in cases {
            let d = Deadlines::uniform(SHORT);
            let results = smol::block_on(deliver(target, "me", "s@y.test", &to, &item, b"", d));
            assert_eq!(oks(&results), want, "{target}");
        }
    }

    const DOVECOT: &str = crate::testsupport::DOVECOT.program;

    /// Dovecot running on a minimal configuration in a temp dir; stopped when dropped.
    struct Dovecot {
        child: Child,
        conf: PathBuf,
        port: u16,
        dir: tempfile::TempDir,
    }

    impl Drop for Dovecot {
        fn drop(&mut self) {
            let _ = Command::new("doveadm")
                .arg("-c")
                .arg(&self.conf)
                .arg("stop")
                .stderr(Stdio::null())
                .status();
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// The configuration the end-to-end tests reuse: LMTP only, everything under `dir`.
    /// Dovecot refuses to deliver as uid 0, so as root the mail belongs to `nobody`.
    fn dovecot_conf(dir: &Path, port: u16, uid: u32, gid: u32) -> String {
        let d = dir.display();
        format!(
            "base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = lmtp
ssl = no
default_internal_user = root
default_internal_group = root
default_login_user = root
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:{d}/mail/%u
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={d}/home/%u
}}
passdb {{
  driver = static
  args = nopassword
}}
"
        )
    }

    fn start_dovecot() -> Option<Dovecot> {
        if !crate::testsupport::DOVECOT.available() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: getuid/getgid cannot fail and take no arguments.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let (uid, gid) = if uid == 0 { (65534, 65534) } else { (uid, gid) };
        for sub in ["mail", "home"] {
            let path = dir.path().join(sub);
            std::fs::create_dir(&path).unwrap();
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.path().join("dovecot.conf");
        std::fs::write(&conf, dovecot_conf(dir.path(), port, uid, gid)).unwrap();
        let child = Command::new(DOVECOT)
            .arg("-F")
            .arg("-c")
            .arg(&conf)
            .spawn()
            .unwrap();
        let dovecot = Dovecot {
            child,
            conf,
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "dovecot did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(dovecot)
    }

    fn maildir_messages(dir: &Path, user: &str) -> Vec<Vec<u8>> {
        let new = dir.join("mail").join(user).join("new");
        let Ok(entries) = std::fs::read_dir(new) else {
            return vec![];
        };
        entries
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect()
    }

    #[test]
    fn dovecot_delivers_to_two_maildirs() {
        let Some(dovecot) = start_dovecot() else {
            return;
        };
        let msgdir = tempfile::tempdir().unwrap();
        let body = b"Subject: lmtp test\r\n\r\n.a line with a dot\r\nend\r\n";
        let item = item(msgdir.path(), body);
        let to = rcpts(&["alice@x.test", "bob@x.test"]);
        let socket = dovecot.dir.path().join("run").join("lmtp");
        let targets = [
            format!("127.0.0.1:{}", dovecot.port),
            format!("unix:{}", socket.display()),
        ];
        for target in &targets {
            let d = Deadlines::uniform(Duration::from_secs(10));
            let results = smol::block_on(deliver(
                target,
                "tambo.test",
                "s@y.test",
                &to,
                &item,
                b"X-Pre: 1\r\n",
                d,
            ));
            assert_eq!(oks(&results), [None, None], "{target}: {results:?}");
        }
        for user in ["alice@x.test", "bob@x.test"] {
            let messages = maildir_messages(dovecot.dir.path(), user);
            assert_eq!(messages.len(), 2, "{user}");
            for m in messages {
                // Dovecot stores LF line endings and adds its own trace headers in front;
                // ours, the body and the unstuffed dot follow intact.
                let text = String::from_utf8_lossy(&m).replace("\r\n", "\n");
                assert!(text.contains("\nX-Pre: 1\nSubject: lmtp test\n"), "{text}");
                assert!(text.ends_with("\n\n.a line with a dot\nend\n"), "{text}");
            }
        }
    }
}
