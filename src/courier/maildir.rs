//! Built-in Maildir delivery: the message goes into one of the user's folders through the
//! mailbox store ([`mailbox::deliver`]: `data_dir/mail/<domain>/<user>/`, folders 0700,
//! files 0600, fsync before the link into `new/`); this picks the folder, adds the trace
//! headers and says which failures are permanent.

use crate::courier::DeliveryError;
use crate::mailbox::{self, Flags, FolderName, SpecialUse, Store, StoreError, UserStore};
use crate::message::StoredMessage;

/// The keyword of mail filed as spam (RFC 5788's registry; Thunderbird, K-9, Dovecot's
/// antispam plugins use it).
const JUNK_KEYWORD: &str = "$Junk";

/// Delivers the message of `item` to `user@domain`, prepending `Return-Path` and
/// `Delivered-To`, converting CRLF to LF, into the folder [`placement`] picks for the
/// recipient address `original` (as the sender wrote it). Streams from the queue file;
/// never holds a large message in memory.
///
/// Idempotent per `delivery_key` (the queue id and the recipient's index): see
/// [`mailbox::deliver`].
pub fn deliver(
    store: &Store,
    domain: &str,
    user: &str,
    original: &str,
    item: &StoredMessage,
    delivery_key: &str,
) -> Result<(), DeliveryError> {
    let headers = mailbox::trace_headers(&item.envelope.from, user, domain);
    let (folder, flags) = placement(store, domain, user, original, item);
    mailbox::deliver_flagged(
        store,
        domain,
        user,
        &folder,
        item,
        headers.as_bytes(),
        delivery_key,
        &flags,
    )
    .map_err(|e| delivery_error(e, user, domain))
}

/// Where a message goes: mail accepted under `inbound_policy` "tag" after an SPF or DMARC
/// failure to Junk with `$Junk`; mail to `user+tag@` into folder `tag` when the user has
/// one (Dovecot's `lmtp_save_to_detail_mailbox`; the detail of an alias address carries
/// over to its users, as Postfix's `propagate_unmatched_extensions` does); else INBOX.
pub fn placement(
    store: &Store,
    domain: &str,
    user: &str,
    original: &str,
    item: &StoredMessage,
) -> (FolderName, Flags) {
    if item.envelope.no_forward.is_some() {
        let junk =
            FolderName::parse(SpecialUse::Junk.folder()).unwrap_or_else(|_| FolderName::inbox());
        let flags = Flags {
            system: 0,
            keywords: vec![JUNK_KEYWORD.to_string()],
        };
        return (junk, flags);
    }
    let local = original
        .rsplit_once('@')
        .map_or(original, |(local, _)| local);
    let folder = store
        .detail_of(local)
        .and_then(|detail| FolderName::parse(detail).ok())
        .filter(|name| !name.is_inbox())
        .filter(|name| UserStore::new(store.clone(), domain, user).is_ok_and(|u| u.exists(name)));
    (folder.unwrap_or_else(FolderName::inbox), Flags::default())
}

/// Bad names are permanent; a full mailbox is "452 4.2.2 mailbox full" (RFC 3463 §3.3:
/// temporary, the message stays queued and is retried); every other failure is temporary:
/// a full disk may clear up before the queue gives up. The reason names the path; it goes
/// to the log and the queue, never to a peer.
fn delivery_error(e: StoreError, user: &str, domain: &str) -> DeliveryError {
    match e {
        StoreError::BadName(why) => DeliveryError::permanent(format!("maildir: {why}")),
        StoreError::OverQuota => DeliveryError::temporary(format!(
            "maildir: 452 4.2.2 mailbox full ({user}@{domain} is over quota)"
        )),
        e => {
            let hint = match &e {
                StoreError::Io { source, .. } => match source.raw_os_error() {
                    Some(libc::ENOSPC) => " (disk full)",
                    Some(libc::EDQUOT) => " (quota exceeded)",
                    _ => "",
                },
                _ => "",
            };
            DeliveryError::temporary(format!("maildir: {e}{hint}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aliases::Recipient;
    use crate::message::{Envelope, QueuedRcpt, RcptState};
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    /// The mailbox writer's read size (mailbox::writer).
    const COPY_BUFFER: usize = 64 * 1024;

    fn store(root: &Path, host: &str) -> Store {
        Store::new(root.to_path_buf(), None).with_hostname(host)
    }

    fn queued(dir: &Path, from: &str, data: &[u8]) -> StoredMessage {
        let rcpt = QueuedRcpt {
            original: "bob@example.org".to_string(),
            target: Recipient::Mailbox {
                address: "bob@example.org".to_string(),
            },
            state: RcptState::Pending,
            last_error: None,
        };
        let envelope = Envelope {
            from: from.to_string(),
            rcpts: vec![rcpt],
            received_at: 0,
            client: String::new(),
            ..Default::default()
        };
        crate::message::stored::written(dir, data, envelope)
    }

    fn files_in(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// `user+tag@` goes into folder `tag` when it exists (also through another separator
    /// and an alias address's detail), else into INBOX; the detail never names a path.
    #[test]
    fn the_detail_of_the_address_picks_an_existing_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("mail");
        let store = store(&root, "host").with_detail_separators("+-");
        store
            .user("example.org", "bob")
            .unwrap()
            .create(&FolderName::parse("lists").unwrap())
            .unwrap();
        let item = queued(tmp.path(), "a@example.com", b"Subject: x\r\n\r\nx\r\n");
        let cases = [
            ("bob+lists@example.org", "lists"),
            ("bob-lists@example.org", "lists"),
            ("sales+lists@example.org", "lists"),
            ("bob+nosuch@example.org", "INBOX"),
            ("bob@example.org", "INBOX"),
            ("+lists@example.org", "INBOX"),
            ("bob+@example.org", "INBOX"),
            ("bob+../lists@example.org", "INBOX"),
            ("bob+INBOX@example.org", "INBOX"),
        ];
        for (i, (original, want)) in cases.iter().enumerate() {
            let (folder, flags) = placement(&store, "example.org", "bob", original, &item);
            assert_eq!(folder.as_str(), *want, "{original}");
            assert_eq!(flags, Flags::default());
            deliver(
                &store,
                "example.org",
                "bob",
                original,
                &item,
                &format!("q{i}_0"),
            )
            .unwrap();
        }
        let maildir = root.join("example.org/bob");
        assert_eq!(files_in(&maildir.join(".lists/new")).len(), 3);
        assert_eq!(files_in(&maildir.join("new")).len(), 6);
    }

    /// Mail accepted under `inbound_policy` "tag" goes to Junk, flagged `$Junk` (in
    /// `cur/`, the keyword's letter in its name, as Dovecot files it), wherever it was for.
    #[test]
    fn tagged_mail_goes_to_junk_with_the_junk_keyword() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("mail");
        let store = store(&root, "host");
        let mut item = queued(tmp.path(), "a@example.com", b"Subject: x\r\n\r\nx\r\n");
        item.envelope.no_forward = Some("SPF fail".into());
        deliver(
            &store,
            "example.org",
            "bob",
            "bob+lists@example.org",
            &item,
            "q1_0",
        )
        .unwrap();
        let junk = root.join("example.org/bob/.Junk");
        assert!(files_in(&junk.join("new")).is_empty());
        let cur = files_in(&junk.join("cur"));
        assert_eq!(cur.len(), 1);
        let keywords = fs::read_to_string(junk.join("dovecot-keywords")).unwrap();
        assert_eq!(keywords.trim(), "0 $Junk");
        assert!(cur[0].to_str().unwrap().ends_with(":2,a"), "{cur:?}");
        assert_eq!(mode(&cur[0]), 0o600);
        // Idempotent like any delivery, and seen as $Junk by a session.
        deliver(
            &store,
            "example.org",
            "bob",
            "bob@example.org",
            &item,
            "q1_0",
        )
        .unwrap();
        assert_eq!(files_in(&junk.join("cur")).len(), 1);
        let user = store.user("example.org", "bob").unwrap();
        let folder = user
            .open(&FolderName::parse("Junk").unwrap(), true)
            .unwrap();
        assert_eq!(folder.flags(0).keywords, ["$Junk"]);
        assert!(files_in(&root.join("example.org/bob/new")).is_empty());
    }

    #[test]
    fn delivers_into_new_with_headers() {
        let tmp = tempfile::tempdir().unwrap();
        let item = queued(
            tmp.path(),
            "alice@example.com",
            b"Subject: hi\r\n\r\nbody\r\n",
        );
        let root = tmp.path().join("mail");
        deliver(
            &store(&root, "mx.example.org"),
            "example.org",
            "bob",
            "bob@example.org",
            &item,
            "q1_0",
        )
        .unwrap();

        let maildir = root.join("example.org/bob");
        let new = files_in(&maildir.join("new"));
        assert_eq!(new.len(), 1);
        assert!(files_in(&maildir.join("tmp")).is_empty());
        assert!(files_in(&maildir.join("cur")).is_empty());
        let want = "Return-Path: <alice@example.com>\nDelivered-To: bob@example.org\n\
                    Subject: hi\n\nbody\n";
        let got = fs::read(&new[0]).unwrap();
        assert_eq!(String::from_utf8_lossy(&got), want);

        let name = new[0].file_name().unwrap().to_str().unwrap();
        let (base, sizes) = name.split_once(",S=").unwrap();
        let (size, crlf_size) = sizes.split_once(",W=").unwrap();
        assert_eq!(size, want.len().to_string());
        assert_eq!(
            crlf_size,
            (want.len() + want.matches('\n').count()).to_string()
        );
        let parts: Vec<&str> = base.splitn(3, '.').collect();
        assert_eq!(parts[0], item.envelope.received_at.to_string(), "{name}");
        assert_eq!(parts[1], "q1_0", "{name}");
        assert_eq!(parts[2], "mx.example.org", "{name}");

        assert_eq!(mode(&new[0]), 0o600);
        for dir in ["mail", "mail/example.org", "mail/example.org/bob"] {
            assert_eq!(mode(&tmp.path().join(dir)), 0o700, "{dir}");
        }
        for sub in ["tmp", "new", "cur"] {
            assert_eq!(mode(&maildir.join(sub)), 0o700, "{sub}");
        }
    }

    #[test]
    fn null_sender_distinct_keys_and_idempotence() {
        let tmp = tempfile::tempdir().unwrap();
        let item = queued(tmp.path(), "", b"x\r\n");
        let root = tmp.path().join("mail");
        deliver(
            &store(&root, "host"),
            "example.org",
            "bob",
            "bob@example.org",
            &item,
            "q1_0",
        )
        .unwrap();
        deliver(
            &store(&root, "host"),
            "example.org",
            "bob",
            "bob@example.org",
            &item,
            "q1_1",
        )
        .unwrap();
        // The same delivery again (a restart before its status was recorded): no second copy.
        deliver(
            &store(&root, "host"),
            "example.org",
            "bob",
            "bob@example.org",
            &item,
            "q1_0",
        )
        .unwrap();
        let new = files_in(&root.join("example.org/bob/new"));
        assert_eq!(new.len(), 2);
        assert_ne!(new[0], new[1]);
        assert!(files_in(&root.join("example.org/bob/tmp")).is_empty());
        for key in ["../x", "", "a b"] {
            let err = deliver(
                &store(&root, "host"),
                "example.org",
                "bob",
                "bob@example.org",
                &item,
                key,
            );
            assert!(err.unwrap_err().permanent, "{key:?}");
        }
        for path in new {
            let text = fs::read_to_string(path).unwrap();
            assert!(text.starts_with("Return-Path: <>\n"), "{text}");
        }
    }

    #[test]
    fn crlf_split_at_buffer_boundary() {
        let tmp = tempfile::tempdir().unwrap();
        // The CR of a CRLF is the last byte of the first 64 KiB read; a lone CR follows later.
        let mut data = vec![b'a'; COPY_BUFFER - 1];
        data.extend_from_slice(b"\r\nb\rc\r\n");
        let item = queued(tmp.path(), "a@b.c", &data);
        let root = tmp.path().join("mail");
        deliver(
            &store(&root, "host"),
            "example.org",
            "bob",
            "bob@example.org",
            &item,
            "q1_0",
        )
        .unwrap();
        let new = files_in(&root.join("example.org/bob/new"));
        let got = fs::read(&new[0]).unwrap();
        let mut want = b"Return-Path: <a@b.c>\nDelivered-To: bob@example.org\n".to_vec();
        want.extend(vec![b'a'; COPY_BUFFER - 1]);
        want.extend_from_slice(b"\nb\rc\n");
        assert!(got == want, "content differs around the buffer boundary");
    }

    #[test]
    fn unsafe_names_are_refused_permanently() {
        let tmp = tempfile::tempdir().unwrap();
        let item = queued(tmp.path(), "a@b.c", b"x\r\n");
        let root = tmp.path().join("mail");
        let cases = [
            ("", "bob"),
            (".", "bob"),
            ("..", "bob"),
            ("a/b", "bob"),
            ("ex\0ample.org", "bob"),
            ("example.org", ""),
            ("example.org", "."),
            ("example.org", ".."),
            ("example.org", "../../etc"),
            ("example.org", "bo\nb"),
        ];
        for (domain, user) in cases {
            let err = deliver(
                &store(&root, "host"),
                domain,
                user,
                "bob@example.org",
                &item,
                "q1_0",
            )
            .unwrap_err();
            assert!(err.permanent, "{domain:?} {user:?}");
        }
        assert!(!root.exists(), "nothing may be created for a refused name");
    }

    #[test]
    fn io_errors_are_temporary_and_name_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let item = queued(tmp.path(), "a@b.c", b"x\r\n");
        let root = tmp.path().join("mail");
        // A file where the domain folder should be.
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("example.org"), b"").unwrap();
        let err = deliver(
            &store(&root, "host"),
            "example.org",
            "bob",
            "bob@example.org",
            &item,
            "q1_0",
        )
        .unwrap_err();
        assert!(!err.permanent);
        assert!(err.reason.contains("example.org/bob"), "{}", err.reason);

        let mut gone = item.clone();
        gone.path = tmp.path().join("missing");
        gone.file = None;
        let err = deliver(
            &store(&root, "host"),
            "example.net",
            "bob",
            "bob@example.org",
            &gone,
            "q1_0",
        )
        .unwrap_err();
        assert!(!err.permanent);
        assert!(err.reason.contains("missing"), "{}", err.reason);
        assert!(
            files_in(&root.join("example.net/bob/tmp")).is_empty(),
            "tmp file removed"
        );
    }

    #[test]
    fn over_quota_is_temporary_452_4_2_2() {
        let tmp = tempfile::tempdir().unwrap();
        let item = queued(tmp.path(), "a@b.c", &vec![b'x'; 300]);
        let root = tmp.path().join("mail");
        let store = Store::new(root.clone(), Some(500)).with_hostname("host");
        deliver(
            &store,
            "example.org",
            "bob",
            "bob@example.org",
            &item,
            "q1_0",
        )
        .unwrap();
        let err = deliver(
            &store,
            "example.org",
            "bob",
            "bob@example.org",
            &item,
            "q1_1",
        )
        .unwrap_err();
        assert!(!err.permanent, "the message stays queued");
        assert!(
            err.reason.contains("452 4.2.2 mailbox full"),
            "{}",
            err.reason
        );
        assert!(err.reason.contains("bob@example.org"), "{}", err.reason);
        // The one already there is found again, not refused (idempotent retry).
        deliver(
            &store,
            "example.org",
            "bob",
            "bob@example.org",
            &item,
            "q1_0",
        )
        .unwrap();
        assert_eq!(files_in(&root.join("example.org/bob/new")).len(), 1);
    }
}
