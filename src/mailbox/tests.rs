//! The store as its users see it: delivery, folders, UIDs, flags, sync, the cache, quota,
//! crash leftovers, files written by Dovecot.

use super::*;
use crate::message::{Envelope, StoredMessage};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

mod modseq;
mod shared;

/// (UID, RFC822.SIZE, INTERNALDATE) of every message, dates looked up as FETCH does.
fn uid_size_date(folder: &mut Folder) -> Vec<(u32, u64, i64)> {
    (0..folder.len())
        .map(|i| {
            let date = folder.internaldate(i);
            (folder.message(i).uid, folder.message(i).size, date)
        })
        .collect()
}

const DOMAIN: &str = "example.org";
const USER: &str = "bob";

struct Env {
    tmp: tempfile::TempDir,
    store: Store,
}

impl Env {
    fn new() -> Env {
        Env::with_quota(None)
    }

    fn with_quota(quota: Option<u64>) -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path().join("mail"), quota).with_hostname("mx.test");
        Env { tmp, store }
    }

    fn user(&self) -> UserStore {
        self.store.user(DOMAIN, USER).unwrap()
    }

    fn root(&self) -> PathBuf {
        self.tmp.path().join("mail").join(DOMAIN).join(USER)
    }

    fn message(&self, data: &[u8]) -> StoredMessage {
        let envelope = Envelope {
            from: "alice@example.com".into(),
            received_at: 1_700_000_000,
            ..Default::default()
        };
        crate::message::stored::written(self.tmp.path(), data, envelope)
    }

    /// Delivers `data` to INBOX under delivery key `key`.
    fn deliver(&self, key: &str, data: &[u8]) -> Result<(), StoreError> {
        let item = self.message(data);
        deliver(
            &self.store,
            DOMAIN,
            USER,
            &FolderName::inbox(),
            &item,
            b"",
            key,
        )
    }

    fn deliver_n(&self, n: usize) {
        for i in 0..n {
            let data = format!("Subject: {i}\r\n\r\nbody {i}\r\n");
            self.deliver(&format!("k{i}"), data.as_bytes()).unwrap();
        }
    }
}

/// Two sessions on INBOX, which got `n` messages.
fn two_sessions(env: &Env, n: usize) -> (Folder, Folder) {
    env.deliver_n(n);
    let user = env.user();
    let inbox = FolderName::inbox();
    (
        user.open(&inbox, false).unwrap(),
        user.open(&inbox, false).unwrap(),
    )
}

fn system_flags(system: u8) -> Flags {
    Flags {
        system,
        keywords: vec![],
    }
}

fn name(s: &str) -> FolderName {
    FolderName::parse(s).unwrap()
}

fn uids(folder: &Folder) -> Vec<u32> {
    folder.messages().iter().map(|m| m.uid).collect()
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Sets a path's mtime into the past, as if the last change was long ago.
fn age(path: &Path) {
    let old = SystemTime::now() - Duration::from_secs(30);
    fs::File::open(path).unwrap().set_modified(old).unwrap();
}

fn age_folder(dir: &Path) {
    for sub in ["new", "cur", "dovecot-uidlist", "dovecot-keywords"] {
        if dir.join(sub).exists() {
            age(&dir.join(sub));
        }
    }
}

#[test]
fn user_gets_inbox_and_special_folders_subscribed() {
    let env = Env::new();
    let user = env.user();
    let root = env.root();
    for dir in ["", ".Sent", ".Drafts", ".Trash", ".Junk"] {
        let d = root.join(dir);
        for sub in ["cur", "new", "tmp"] {
            assert!(d.join(sub).is_dir(), "{dir}/{sub}");
            assert_eq!(
                fs::metadata(d.join(sub)).unwrap().permissions().mode() & 0o777,
                0o700
            );
        }
        assert!(d.join("dovecot-uidlist").is_file(), "{dir}");
        assert_eq!(d.join("maildirfolder").is_file(), !dir.is_empty(), "{dir}");
    }
    assert_eq!(
        fs::read_to_string(root.join("subscriptions")).unwrap(),
        "V\t2\n\nINBOX\nSent\nDrafts\nTrash\nJunk\n"
    );
    let list = user.list().unwrap();
    let names: Vec<&str> = list.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["INBOX", "Drafts", "Junk", "Sent", "Trash"]);
    assert!(
        list.iter()
            .all(|i| i.subscribed && !i.noselect && !i.has_children)
    );
    let specials: Vec<Option<SpecialUse>> = list.iter().map(|i| i.special).collect();
    assert_eq!(
        specials,
        [
            None,
            Some(SpecialUse::Drafts),
            Some(SpecialUse::Junk),
            Some(SpecialUse::Sent),
            Some(SpecialUse::Trash)
        ]
    );
    // Unsubscribed stays unsubscribed; a deleted special folder comes back, subscribed.
    user.subscribe(&name("Sent"), false).unwrap();
    user.delete(&name("Junk")).unwrap();
    user.subscribe(&name("Junk"), false).unwrap();
    let user = env.user();
    let list = user.list().unwrap();
    let subscribed: Vec<&str> = list
        .iter()
        .filter(|i| i.subscribed)
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(subscribed, ["INBOX", "Drafts", "Junk", "Trash"]);
    assert!(env.store.user("example.org", "../x").is_err());
}

#[test]
fn delivered_messages_get_uids_in_name_order_and_are_recent_once() {
    let env = Env::new();
    env.deliver_n(3);
    let root = env.root();
    assert_eq!(files(&root.join("new")).len(), 3);
    let user = env.user();
    let mut folder = user.open(&FolderName::inbox(), false).unwrap();
    assert_eq!(uids(&folder), [1, 2, 3]);
    assert_eq!(folder.uidnext, 4);
    assert!(folder.messages().iter().all(|m| m.recent));
    assert!(files(&root.join("new")).is_empty(), "moved to cur/");
    let cur = files(&root.join("cur"));
    assert!(cur.iter().all(|n| n.ends_with(":2,")), "{cur:?}");
    // Sizes are CRLF sizes; dates the files' mtimes.
    assert_eq!(
        folder.message(0).size,
        "Subject: 0\r\n\r\nbody 0\r\n".len() as u64
    );
    let mtime = fs::metadata(root.join("cur").join(&cur[0])).unwrap();
    assert_eq!(
        folder.internaldate(0),
        std::os::unix::fs::MetadataExt::mtime(&mtime)
    );
    // UIDs follow the file names: message k0 is UID 1.
    let mut data = String::new();
    std::io::Read::read_to_string(&mut folder.open_file(0).unwrap(), &mut data).unwrap();
    assert_eq!(data, "Subject: 0\n\nbody 0\n");
    let uidlist = fs::read_to_string(root.join("dovecot-uidlist")).unwrap();
    assert_eq!(uidlist.lines().count(), 4, "{uidlist}");
    assert!(
        uidlist.starts_with(&format!("3 V{} N1 G", folder.uidvalidity)),
        "{uidlist}"
    );
    drop(folder);
    let again = user.open(&FolderName::inbox(), false).unwrap();
    assert_eq!(uids(&again), [1, 2, 3]);
    assert!(
        again.messages().iter().all(|m| !m.recent),
        "recent to one session only"
    );
}

#[test]
fn read_only_open_moves_nothing() {
    let env = Env::new();
    env.deliver_n(2);
    let user = env.user();
    let mut folder = user.open(&FolderName::inbox(), true).unwrap();
    assert_eq!(uids(&folder), [1, 2]);
    assert!(folder.messages().iter().all(|m| m.recent));
    assert_eq!(files(&env.root().join("new")).len(), 2);
    assert!(matches!(
        folder.store_flags(0, Flags::default()),
        Err(StoreError::ReadOnly)
    ));
    assert!(matches!(folder.expunge(None), Err(StoreError::ReadOnly)));
    // A read-write session takes them; the read-only one sees them move, unchanged.
    let rw = user.open(&FolderName::inbox(), false).unwrap();
    assert_eq!(uids(&rw), [1, 2]);
    let changes = folder.sync().unwrap();
    assert_eq!(
        changes,
        Changes {
            exists: 2,
            recent: 2,
            ..Changes::default()
        }
    );
    assert!(folder.open_file(1).is_ok());
}

#[test]
fn sync_reports_what_others_did() {
    let env = Env::new();
    env.deliver_n(3);
    let user = env.user();
    let inbox = FolderName::inbox();
    let mut a = user.open(&inbox, false).unwrap();
    let mut b = user.open(&inbox, false).unwrap();
    assert_eq!(
        b.sync().unwrap(),
        Changes {
            exists: 3,
            recent: 0,
            ..Changes::default()
        }
    );

    env.deliver("k9", b"Subject: new\r\n\r\nx\r\n").unwrap();
    let changes = a.sync().unwrap();
    assert_eq!(
        changes,
        Changes {
            exists: 4,
            recent: 4,
            ..Changes::default()
        }
    );
    assert_eq!(uids(&a), [1, 2, 3, 4]);
    assert_eq!(
        b.sync().unwrap(),
        Changes {
            exists: 4,
            recent: 0,
            ..Changes::default()
        }
    );

    a.store_flags(
        1,
        Flags {
            system: Flags::SEEN,
            keywords: vec![],
        },
    )
    .unwrap();
    let changes = b.sync().unwrap();
    assert_eq!(changes.flags, [1]);
    assert_eq!(b.message(1).system, Flags::SEEN);

    a.store_flags(
        0,
        Flags {
            system: Flags::DELETED,
            keywords: vec![],
        },
    )
    .unwrap();
    a.store_flags(
        2,
        Flags {
            system: Flags::DELETED,
            keywords: vec![],
        },
    )
    .unwrap();
    assert_eq!(a.expunge(None).unwrap(), [2, 0]);
    assert_eq!(uids(&a), [2, 4]);
    let changes = b.sync().unwrap();
    assert_eq!(changes.expunged, [2, 0], "old indexes, highest first");
    assert_eq!(changes.exists, 2);
    assert_eq!(uids(&b), [2, 4]);
    // Nothing more happened.
    let quiet = b.sync().unwrap();
    assert!(quiet.expunged.is_empty() && quiet.flags.is_empty() && quiet.exists == 2);
}

/// During FETCH, STORE and SEARCH a session learns of new mail and flags but keeps the
/// messages others expunged (RFC 3501 §7.4.1) until a look that may tell them.
#[test]
fn expunges_held_until_they_may_be_told() {
    let env = Env::new();
    let (mut a, mut b) = two_sessions(&env, 3);
    let deleted = system_flags(Flags::DELETED);
    a.store_flags(1, deleted).unwrap();
    a.expunge(None).unwrap();
    // Index 1 of a is UID 3 now.
    a.store_flags(1, system_flags(Flags::SEEN)).unwrap();
    env.deliver("late", b"Subject: late\r\n\r\nx\r\n").unwrap();

    let held = b.sync_keeping_expunged().unwrap();
    assert!(held.expunged.is_empty(), "{held:?}");
    assert_eq!(
        held.exists, 4,
        "the expunged one keeps its number; the new one is told"
    );
    assert_eq!(held.flags, [2], "UID 3 got \\Seen");
    assert_eq!(uids(&b), [1, 2, 3, 4]);
    assert!(matches!(b.open_file(1), Err(StoreError::Expunged)));
    // Held across another such look, then told by one that may.
    assert!(b.sync_keeping_expunged().unwrap().expunged.is_empty());
    let told = b.sync().unwrap();
    assert_eq!(told.expunged, [1]);
    assert_eq!(told.exists, 3);
    assert_eq!(uids(&b), [1, 3, 4]);
    assert!(b.sync().unwrap().expunged.is_empty());
}

#[test]
fn unchanged_stamps_are_trusted_only_once_old() {
    let env = Env::new();
    env.deliver_n(1);
    let user = env.user();
    let inbox = FolderName::inbox();
    let root = env.root();
    let mut folder = user.open(&inbox, false).unwrap();
    age_folder(&root);
    folder.sync().unwrap(); // looks again (the stamps changed), now trusts them
    // A file slipped into cur/ with the directory's mtime put back: invisible, which shows
    // that an unchanged, old stamp costs no listing.
    let cur = root.join("cur");
    let before = fs::metadata(&cur).unwrap().modified().unwrap();
    fs::write(cur.join("1700000099.M1P1.other:2,S"), b"Subject: x\n\n").unwrap();
    fs::File::open(&cur).unwrap().set_modified(before).unwrap();
    assert_eq!(folder.sync().unwrap().exists, 1);
    // The same with a recent mtime: the stamp is not trusted, the file is found.
    let recent = SystemTime::now() - Duration::from_millis(300);
    fs::File::open(&cur).unwrap().set_modified(recent).unwrap();
    folder.sync().unwrap();
    let sneaky = root.join("cur").join("1700000099.M1P1.other2:2,S");
    fs::write(&sneaky, b"Subject: y\n\n").unwrap();
    fs::File::open(&cur).unwrap().set_modified(recent).unwrap();
    let changes = folder.sync().unwrap();
    assert_eq!(changes.exists, 3, "both files found");
    assert_eq!(uids(&folder), [1, 2, 3]);
}

#[test]
fn flags_keywords_and_their_letters() {
    let env = Env::new();
    env.deliver_n(2);
    let user = env.user();
    let inbox = FolderName::inbox();
    let mut folder = user.open(&inbox, false).unwrap();
    let flags = Flags {
        system: Flags::SEEN | Flags::FLAGGED,
        keywords: vec!["$Junk".into(), "Label".into(), "$forwarded".into()],
    };
    folder.store_flags(0, flags).unwrap();
    let root = env.root();
    let cur = files(&root.join("cur"));
    assert!(cur.iter().any(|n| n.ends_with(":2,FPSab")), "{cur:?}");
    assert_eq!(
        fs::read_to_string(root.join("dovecot-keywords")).unwrap(),
        "0 $Junk\n1 Label\n"
    );
    let got = folder.flags(0);
    assert_eq!(got.system, Flags::SEEN | Flags::FLAGGED | Flags::FORWARDED);
    assert_eq!(got.keywords, ["$Junk", "Label"]);
    assert_eq!(folder.keywords(), ["$Junk", "Label"]);
    // Another session sees the names too, and reuses the letters.
    let mut other = user.open(&inbox, false).unwrap();
    assert_eq!(other.flags(0).keywords, ["$Junk", "Label"]);
    other
        .store_flags(
            1,
            Flags {
                system: 0,
                keywords: vec!["label".into()],
            },
        )
        .unwrap();
    assert!(files(&root.join("cur")).iter().any(|n| n.ends_with(":2,b")));
    // Bad keywords and too many keywords.
    let bad = Flags {
        system: 0,
        keywords: vec!["a b".into()],
    };
    assert!(matches!(
        folder.store_flags(0, bad),
        Err(StoreError::BadFlag(_))
    ));
    let many = Flags {
        system: 0,
        keywords: (0..30).map(|i| format!("k{i}")).collect(),
    };
    assert!(matches!(
        folder.store_flags(1, many),
        Err(StoreError::TooManyKeywords)
    ));
    // Flags survive a reopen.
    let again = user.open(&inbox, false).unwrap();
    assert_eq!(again.flags(0), folder.flags(0));
}

#[test]
fn expunge_all_deleted_or_only_given_uids() {
    let env = Env::new();
    env.deliver_n(5);
    let user = env.user();
    let mut folder = user.open(&FolderName::inbox(), false).unwrap();
    for i in [0, 2, 4] {
        folder
            .store_flags(
                i,
                Flags {
                    system: Flags::DELETED,
                    keywords: vec![],
                },
            )
            .unwrap();
    }
    // UID 2 is not \Deleted, UID 1 not asked for.
    assert_eq!(folder.expunge(Some(&[5, 2, 3])).unwrap(), [4, 2]);
    assert_eq!(uids(&folder), [1, 2, 4]);
    assert_eq!(folder.expunge(None).unwrap(), [0]);
    assert_eq!(uids(&folder), [2, 4]);
    assert_eq!(files(&env.root().join("cur")).len(), 2);
    // UIDs are never given again, whatever is expunged.
    let mut last = folder;
    last.store_flags(
        1,
        Flags {
            system: Flags::DELETED,
            keywords: vec![],
        },
    )
    .unwrap();
    last.expunge(None).unwrap();
    drop(last);
    env.deliver("late", b"Subject: late\r\n\r\n").unwrap();
    let folder = user.open(&FolderName::inbox(), false).unwrap();
    assert_eq!(uids(&folder), [2, 6]);
    assert_eq!(folder.uidnext, 7);
}

#[test]
fn uidlist_is_compacted_keeping_uidvalidity_and_nextuid() {
    let env = Env::new();
    env.deliver_n(8);
    let user = env.user();
    let mut folder = user.open(&FolderName::inbox(), false).unwrap();
    let uidvalidity = folder.uidvalidity;
    for i in 0..6 {
        folder
            .store_flags(
                i,
                Flags {
                    system: Flags::DELETED,
                    keywords: vec![],
                },
            )
            .unwrap();
    }
    folder.expunge(None).unwrap();
    drop(folder);
    let folder = user.open(&FolderName::inbox(), false).unwrap();
    assert_eq!(uids(&folder), [7, 8]);
    let text = fs::read_to_string(env.root().join("dovecot-uidlist")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "records of gone files dropped: {text}");
    assert!(
        lines[0].starts_with(&format!("3 V{uidvalidity} N9 G")),
        "{text}"
    );
    assert_eq!(folder.uidvalidity, uidvalidity);
}

#[test]
fn a_lost_uidlist_means_a_new_uidvalidity_and_no_lost_message() {
    let env = Env::new();
    env.deliver_n(3);
    let user = env.user();
    let first = user.open(&FolderName::inbox(), false).unwrap();
    let (old, old_uids) = (first.uidvalidity, uids(&first));
    drop(first);
    fs::remove_file(env.root().join("dovecot-uidlist")).unwrap();
    let folder = user.open(&FolderName::inbox(), false).unwrap();
    assert_ne!(folder.uidvalidity, old);
    assert_eq!(uids(&folder), old_uids);
    assert_eq!(folder.len(), 3);
}

#[test]
fn uidvalidity_change_under_an_open_folder_is_reported() {
    let env = Env::new();
    env.deliver_n(1);
    let user = env.user();
    let mut folder = user.open(&FolderName::inbox(), false).unwrap();
    let path = env.root().join("dovecot-uidlist");
    let text = fs::read_to_string(&path).unwrap();
    let replaced = text.replacen(&format!("V{}", folder.uidvalidity), "V12345", 1);
    fs::write(&path, replaced).unwrap();
    assert!(matches!(folder.sync(), Err(StoreError::UidValidityChanged)));
}

#[test]
fn append_with_flags_date_and_uid() {
    let env = Env::new();
    let user = env.user();
    let sent = name("Sent");
    let flags = Flags {
        system: Flags::SEEN,
        keywords: vec!["$label1".into()],
    };
    let mut data: &[u8] = b"Subject: sent\r\n\r\nhello\r\n";
    let (uidv, uid) = user
        .append(&sent, &mut data, &flags, Some(1_600_000_000))
        .unwrap();
    assert_eq!(uid, 1);
    let mut data: &[u8] = b"Subject: draft\n\nno flags\n";
    let (_, uid2) = user
        .append(&sent, &mut data, &Flags::default(), None)
        .unwrap();
    assert_eq!(uid2, 2);
    let dir = env.root().join(".Sent");
    assert_eq!(files(&dir.join("new")).len(), 1, "no flags: new/");
    let mut folder = user.open(&sent, false).unwrap();
    assert_eq!(folder.uidvalidity, uidv);
    assert_eq!(uids(&folder), [1, 2]);
    let date = folder.internaldate(0);
    let m = folder.message(0);
    assert_eq!((date, m.size, m.recent), (1_600_000_000, 24, false));
    assert_eq!(folder.flags(0).keywords, ["$label1"]);
    assert!(
        folder.message(1).recent,
        "an APPEND without flags is recent"
    );
    let mut text = String::new();
    std::io::Read::read_to_string(&mut folder.open_file(0).unwrap(), &mut text).unwrap();
    assert_eq!(text, "Subject: sent\n\nhello\n");
    let mut data: &[u8] = b"x";
    let missing = user.append(&name("Nope"), &mut data, &Flags::default(), None);
    assert!(matches!(missing, Err(StoreError::NoSuchFolder)));
}

#[test]
fn copy_and_move_keep_flags_and_give_new_uids() {
    let env = Env::new();
    env.deliver_n(3);
    let user = env.user();
    let archive = name("Archive");
    user.create(&archive).unwrap();
    let mut inbox = user.open(&FolderName::inbox(), false).unwrap();
    inbox
        .store_flags(
            0,
            Flags {
                system: Flags::SEEN,
                keywords: vec!["$Junk".into()],
            },
        )
        .unwrap();
    let (uidv, pairs) = inbox.copy(&[0, 2], &user, &archive).unwrap();
    assert_eq!(pairs, [(1, 1), (3, 2)]);
    assert_eq!(inbox.len(), 3);
    let mut dest = user.open(&archive, false).unwrap();
    assert_eq!(dest.uidvalidity, uidv);
    assert_eq!(uids(&dest), [1, 2]);
    assert_eq!(dest.flags(0).keywords, ["$Junk"]);
    assert_eq!(dest.message(0).system, Flags::SEEN);
    assert_eq!(dest.internaldate(0), inbox.internaldate(0));
    assert_eq!(dest.message(1).size, inbox.message(2).size);
    let (_, pairs, removed) = inbox.move_to(&[1, 2], &user, &archive).unwrap();
    assert_eq!(pairs, [(2, 3), (3, 4)]);
    assert_eq!(removed, [2, 1]);
    assert_eq!(uids(&inbox), [1]);
    let changes = dest.sync().unwrap();
    assert_eq!(changes.exists, 4);
    assert_eq!(uids(&dest), [1, 2, 3, 4]);
    // The original's file is where it was, the copies are files of their own.
    assert_eq!(files(&env.root().join("cur")).len(), 1);
    assert_eq!(files(&env.root().join(".Archive/cur")).len(), 4);
    let missing = inbox.copy(&[0], &user, &name("Nope"));
    assert!(matches!(missing, Err(StoreError::NoSuchFolder)));
}

#[test]
fn folders_create_delete_rename_list() {
    let env = Env::new();
    let user = env.user();
    user.create(&name("Archive.2024")).unwrap();
    assert!(env.root().join(".Archive").is_dir(), "parent made too");
    assert!(matches!(
        user.create(&name("Archive")),
        Err(StoreError::Exists)
    ));
    assert!(matches!(
        user.create(&name("inbox")),
        Err(StoreError::Exists)
    ));
    let list = user.list().unwrap();
    let archive = list.iter().find(|i| i.name.as_str() == "Archive").unwrap();
    assert!(archive.has_children && !archive.subscribed);
    assert!(matches!(
        user.delete(&name("Archive")),
        Err(StoreError::HasChildren)
    ));
    assert!(matches!(
        user.delete(&FolderName::inbox()),
        Err(StoreError::NotAllowed(_))
    ));
    assert!(matches!(
        user.delete(&name("Nope")),
        Err(StoreError::NoSuchFolder)
    ));

    user.subscribe(&name("Archive.2024"), true).unwrap();
    let mut data: &[u8] = b"Subject: kept\n\n";
    user.append(&name("Archive.2024"), &mut data, &Flags::default(), None)
        .unwrap();
    user.rename(&name("Archive"), &name("Old.Stuff")).unwrap();
    let names: Vec<String> = user
        .list()
        .unwrap()
        .iter()
        .map(|i| i.name.to_string())
        .collect();
    assert!(names.contains(&"Old".to_string()), "{names:?}");
    assert!(names.contains(&"Old.Stuff.2024".to_string()), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("Archive")), "{names:?}");
    assert_eq!(
        user.subscriptions()
            .unwrap()
            .iter()
            .filter(|n| n.as_str() == "Old.Stuff.2024")
            .count(),
        1
    );
    let moved = user.open(&name("Old.Stuff.2024"), false).unwrap();
    assert_eq!(moved.len(), 1);
    assert!(matches!(
        user.rename(&name("Old"), &name("Old.Inside")),
        Err(StoreError::NotAllowed(_))
    ));
    assert!(matches!(
        user.rename(&name("Old"), &name("Sent")),
        Err(StoreError::Exists)
    ));
    user.delete(&name("Old.Stuff.2024")).unwrap();
    user.delete(&name("Old.Stuff")).unwrap();
    user.delete(&name("Old")).unwrap();
    let leftovers: Vec<String> = files(&env.root())
        .into_iter()
        .filter(|n| n.starts_with(".."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A level that only exists as a prefix (made by another program) is listed \Noselect.
    fs::create_dir_all(env.root().join(".Lone.Child/cur")).unwrap();
    let list = user.list().unwrap();
    let lone = list.iter().find(|i| i.name.as_str() == "Lone").unwrap();
    assert!(lone.noselect && lone.has_children);
    assert!(matches!(
        user.open(&name("Lone"), true),
        Err(StoreError::NoSuchFolder)
    ));
}

#[test]
fn renaming_inbox_moves_its_messages() {
    let env = Env::new();
    env.deliver_n(2);
    let user = env.user();
    let inbox = user.open(&FolderName::inbox(), false).unwrap();
    drop(inbox);
    user.create(&name("INBOX.Child")).unwrap();
    user.rename(&FolderName::inbox(), &name("Saved")).unwrap();
    let saved = user.open(&name("Saved"), false).unwrap();
    assert_eq!(uids(&saved), [1, 2]);
    let inbox = user.open(&FolderName::inbox(), false).unwrap();
    assert!(inbox.is_empty());
    assert!(
        user.open(&name("INBOX.Child"), true).is_ok(),
        "children stay"
    );
}

#[test]
fn status_counts() {
    let env = Env::new();
    env.deliver_n(3);
    let user = env.user();
    let status = user.status(&FolderName::inbox()).unwrap();
    assert_eq!((status.messages, status.recent, status.unseen), (3, 3, 3));
    assert_eq!(status.uidnext, 4);
    let mut folder = user.open(&FolderName::inbox(), false).unwrap();
    folder
        .store_flags(
            0,
            Flags {
                system: Flags::SEEN,
                keywords: vec![],
            },
        )
        .unwrap();
    let status = user.status(&FolderName::inbox()).unwrap();
    assert_eq!((status.messages, status.recent, status.unseen), (3, 0, 2));
    assert_eq!(status.uidvalidity, folder.uidvalidity);
    let total: u64 = folder.messages().iter().map(|m| m.size).sum();
    assert_eq!(status.size, total);
    assert!(matches!(
        user.status(&name("Nope")),
        Err(StoreError::NoSuchFolder)
    ));
}

#[test]
fn quota_is_enforced_and_kept_in_maildirsize() {
    let env = Env::with_quota(Some(200));
    let body = "x".repeat(80);
    let msg = format!("Subject: q\r\n\r\n{body}\r\n");
    env.deliver("q1", msg.as_bytes()).unwrap();
    env.deliver("q2", msg.as_bytes()).unwrap();
    let err = env.deliver("q3", msg.as_bytes()).unwrap_err();
    assert!(matches!(err, StoreError::OverQuota), "{err}");
    assert!(files(&env.root().join("tmp")).is_empty());
    assert_eq!(files(&env.root().join("new")).len(), 2);
    let user = env.user();
    let mut data = msg.as_bytes();
    assert!(matches!(
        user.append(&FolderName::inbox(), &mut data, &Flags::default(), None),
        Err(StoreError::OverQuota)
    ));
    let (used, limit) = user.quota().unwrap();
    let one = (msg.len() - 3) as u64; // stored with LF
    assert_eq!((used, limit), (2 * one, Some(200)));
    let mut folder = user.open(&FolderName::inbox(), false).unwrap();
    folder
        .store_flags(
            0,
            Flags {
                system: Flags::DELETED,
                keywords: vec![],
            },
        )
        .unwrap();
    folder.expunge(None).unwrap();
    assert_eq!(user.quota().unwrap().0, one);
    env.deliver("q3", msg.as_bytes()).unwrap();
    let text = fs::read_to_string(env.root().join("maildirsize")).unwrap();
    assert!(text.starts_with("200S\n"), "{text}");
    assert!(text.ends_with(&format!("-{one} -1\n{one} 1\n")), "{text}");
}

#[test]
fn pop3_removal_ignores_flags_and_rings_the_notifier() {
    let env = Env::new();
    let (mut pop3, mut imap) = two_sessions(&env, 4);
    // Renamed by the IMAP session meanwhile (a flag): found again by base name.
    imap.store_flags(
        1,
        Flags {
            system: Flags::SEEN,
            keywords: vec![],
        },
    )
    .unwrap();
    // UID 3 is gone already (another program): counted as removed.
    let gone = env.root().join("cur").join(&*pop3.message(2).name);
    std::fs::remove_file(gone).unwrap();
    let listener = env.store.notifier().listen(DOMAIN, USER);
    assert_eq!(pop3.remove(&[3, 2, 99]).unwrap(), [2, 1]);
    assert_eq!(uids(&pop3), [1, 4]);
    assert_eq!(files(&env.root().join("cur")).len(), 2);
    assert!(smol::block_on(smol::future::or(
        async {
            listener.await;
            true
        },
        async {
            smol::Timer::after(Duration::from_secs(5)).await;
            false
        },
    )));
    let changes = imap.sync().unwrap();
    assert_eq!(changes.expunged, [2, 1]);
    assert_eq!(uids(&imap), [1, 4]);
}

#[test]
fn deliveries_ring_the_notifier() {
    let env = Env::new();
    let listener = env.store.notifier().listen(DOMAIN, USER);
    env.deliver("n1", b"Subject: n\r\n\r\n").unwrap();
    let woke = smol::block_on(smol::future::or(
        async {
            listener.await;
            true
        },
        async {
            smol::Timer::after(Duration::from_secs(5)).await;
            false
        },
    ));
    assert!(woke);
}

#[test]
fn delivery_is_idempotent_per_key() {
    let env = Env::new();
    env.deliver("same", b"Subject: 1\r\n\r\n").unwrap();
    env.deliver("same", b"Subject: 1\r\n\r\n").unwrap();
    env.deliver("other", b"Subject: 1\r\n\r\n").unwrap();
    assert_eq!(files(&env.root().join("new")).len(), 2);
    assert!(files(&env.root().join("tmp")).is_empty());
    assert!(matches!(
        env.deliver("../x", b"x"),
        Err(StoreError::BadName(_))
    ));
}

/// A cache in any state: the folder has the same messages, UIDs, sizes and dates, and the
/// cache is whole again afterwards.
#[test]
fn cache_damage_never_loses_or_duplicates_a_message() {
    let env = Env::new();
    env.deliver_n(5);
    let user = env.user();
    let inbox = FolderName::inbox();
    let mut reference = user.open(&inbox, false).unwrap();
    let want = uid_size_date(&mut reference);
    let names: Vec<String> = reference
        .messages()
        .iter()
        .map(|m| filename::base(&m.name).to_string())
        .collect();
    drop(reference);
    let path = env.root().join("tambo-cache");
    let good = fs::read(&path).unwrap();
    let lines = good.split(|&b| b == b'\n').count();
    assert!(lines > 5, "one record per message");
    let entry_for_gone = cache::record("1.gone.h,S=1", 1, 1, None).0;
    let one_missing = {
        // The first record (after the magic line) dropped: a file without an entry.
        let body = &good[b"tambo-cache 1\n".len()..];
        let second = memchr::memmem::find(&body[1..], b"\nR").unwrap() + 2;
        [&good[..b"tambo-cache 1\n".len()], &body[second..]].concat()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"\x00\x01garbage\n\xff".to_vec()),
        ("truncated", good[..good.len() / 2].to_vec()),
        (
            "entry for a gone file",
            [&good[..], &entry_for_gone[..]].concat(),
        ),
        ("file without an entry", one_missing),
        ("empty", Vec::new()),
        (
            "garbage appended",
            [&good[..], b"R00000000 5\nabcde\nzzz"].concat(),
        ),
    ];
    for (what, content) in cases {
        fs::write(&path, &content).unwrap();
        let mut folder = user.open(&inbox, true).unwrap();
        let got = uid_size_date(&mut folder);
        assert_eq!(got, want, "{what}");
        drop(folder);
        let parsed = cache::parse(&fs::read(&path).unwrap(), 0);
        assert!(!parsed.damaged && !parsed.torn_tail, "{what}: rebuilt");
        // What the cache keeps is right (an entry of a gone file may stay: it is
        // ignored). Files whose name tells their size need none: their date is read when
        // asked for.
        for (name, (_, size, date)) in names.iter().zip(&want) {
            match parsed.entries.get(name.as_str()) {
                Some(e) => assert_eq!((e.crlf_size, e.internaldate), (*size, *date), "{what}"),
                None => assert!(filename::size_field(name, b'W').is_some(), "{what}: {name}"),
            }
        }
    }
    fs::remove_file(&path).unwrap();
    assert_eq!(user.open(&inbox, true).unwrap().len(), 5, "missing cache");
    assert!(path.exists(), "and made again");
}

#[test]
fn summaries_come_from_the_cache() {
    let env = Env::new();
    env.deliver_n(1);
    let user = env.user();
    let inbox = FolderName::inbox();
    let folder = user.open(&inbox, true).unwrap();
    let base = filename::base(&folder.message(0).name).to_string();
    let m = folder.message(0).clone();
    drop(folder);
    let summary = Summary {
        envelope: b"(NIL \"cached\" NIL NIL NIL NIL NIL NIL NIL NIL)".to_vec(),
        body: b"(\"TEXT\" \"PLAIN\")".to_vec(),
        bodystructure: b"(\"TEXT\" \"PLAIN\" NIL)".to_vec(),
        search: b"S6 cached\n".to_vec(),
    };
    cache::append_to(
        &env.root(),
        &cache::record(&base, m.size, m.date, Some(&summary)).0,
    );
    let mut folder = user.open(&inbox, true).unwrap();
    let got = folder.summary(0).unwrap();
    assert_eq!(got.envelope, summary.envelope);
    assert_eq!(got.body, summary.body);
    assert_eq!(got.bodystructure, summary.bodystructure);
    assert_eq!(folder.search_texts(0).unwrap(), summary.search);
}

/// Files exactly as Dovecot 2.3 leaves them (see `doveadm save`, `flags add`): the store
/// reads them, and writes nothing back when nothing changes.
#[test]
fn dovecot_folder_is_read_and_left_unchanged() {
    let env = Env::new();
    let root = env.root();
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(root.join(sub)).unwrap();
    }
    let uidlist = "3 V1796624267 N5 G6ad999218b4f166bf679000083ecc375\n\
                   1 :1796624267.M563717P31222.vm,S=18,W=21\n\
                   3 W40 :1796624268.M1P31222.vm,S=34\n\
                   4 P0000000400000001 :1796624269.M2P31222.vm,S=10,W=12\n";
    fs::write(root.join("dovecot-uidlist"), uidlist).unwrap();
    fs::write(root.join("dovecot-keywords"), "0 $Junk\n2 work\n").unwrap();
    fs::write(root.join("subscriptions"), "V\t2\n\nINBOX\nArchive\t2024\n").unwrap();
    let msgs = [
        (
            "new/1796624267.M563717P31222.vm,S=18,W=21:2,Sa",
            "Subject: hi\n\nbody\n",
        ),
        (
            "cur/1796624268.M1P31222.vm,S=34:2,RSc",
            "Subject: two\n\nline\nline\nline\nmore\n",
        ),
        ("cur/1796624269.M2P31222.vm,S=10,W=12:2,T", "Subject:\n\n"),
        ("new/1796624270.M3P31222.vm,S=4,W=5", "x\n\ny"),
    ];
    for (path, data) in msgs {
        fs::write(root.join(path), data).unwrap();
    }
    age_folder(&root);
    let user = env.user();
    let folder = user.open(&FolderName::inbox(), true).unwrap();
    assert_eq!(folder.uidvalidity, 1796624267);
    assert_eq!(uids(&folder), [1, 3, 4, 5], "the new file gets N's UID");
    assert_eq!(folder.uidnext, 6);
    assert_eq!(folder.flags(0).keywords, ["$Junk"]);
    assert_eq!(folder.flags(1).keywords, ["work"]);
    assert_eq!(folder.message(1).system, Flags::ANSWERED | Flags::SEEN);
    assert_eq!(folder.message(2).system, Flags::DELETED);
    let sizes: Vec<u64> = folder.messages().iter().map(|m| m.size).collect();
    assert_eq!(
        sizes,
        [21, 40, 12, 5],
        "W= in the name, else the uidlist's W"
    );
    assert_eq!(
        fs::read_to_string(root.join("dovecot-uidlist")).unwrap(),
        format!("{uidlist}5 :1796624270.M3P31222.vm,S=4,W=5\n"),
        "appended, the rest as Dovecot wrote it"
    );
    assert_eq!(
        fs::read_to_string(root.join("dovecot-keywords")).unwrap(),
        "0 $Junk\n2 work\n"
    );
    drop(folder);
    let names: Vec<String> = user
        .subscriptions()
        .unwrap()
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(
        names,
        ["INBOX", "Archive.2024", "Sent", "Drafts", "Trash", "Junk"].map(String::from)
    );
    let before = fs::read(root.join("dovecot-uidlist")).unwrap();
    user.open(&FolderName::inbox(), true).unwrap();
    assert_eq!(fs::read(root.join("dovecot-uidlist")).unwrap(), before);
}

/// Whatever step a crash interrupts, every message stays reachable.
#[test]
fn crash_leftovers_lose_nothing() {
    let env = Env::new();
    env.deliver_n(2);
    let user = env.user();
    let root = env.root();
    let inbox = FolderName::inbox();
    drop(user.open(&inbox, false).unwrap());
    // A delivery that stopped before its link: only a temp file, ignored (still queued),
    // removed once 36 hours old.
    fs::write(root.join("tmp/1700000000.k7.mx.test"), b"half").unwrap();
    let stale = root.join("tmp/1600000000.k6.mx.test");
    fs::write(&stale, b"old half").unwrap();
    let long_ago = SystemTime::now() - Duration::from_secs(37 * 3600);
    fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(long_ago)
        .unwrap();
    // A delivery linked but whose UID was never given: found and given one.
    fs::write(root.join("new/1700000001.k8.mx.test,S=3,W=3"), b"x\n").unwrap();
    // A copy placed but not recorded.
    fs::write(root.join("cur/1700000002.M1P9.mx.test,S=3,W=3:2,S"), b"y\n").unwrap();
    // The uidlist lock of a process that died, and a temp file of an uidlist rewrite.
    fs::write(
        root.join("dovecot-uidlist.lock"),
        format!("{}:{}", i32::MAX, filename::system_hostname()),
    )
    .unwrap();
    fs::write(root.join(".dovecot-uidlist.tmp.1.0"), b"3 V1 N1\n").unwrap();
    // A folder deleted halfway, and one created halfway.
    fs::create_dir_all(root.join("..tambo-deleted.1.0/cur")).unwrap();
    fs::create_dir_all(root.join("..tambo-new.1.0/cur")).unwrap();
    let folder = user.open(&inbox, false).unwrap();
    assert_eq!(uids(&folder), [1, 2, 3, 4]);
    assert!(!root.join("dovecot-uidlist.lock").exists());
    assert_eq!(files(&root.join("tmp")), ["1700000000.k7.mx.test"]);
    let names: Vec<String> = user
        .list()
        .unwrap()
        .iter()
        .map(|i| i.name.to_string())
        .collect();
    assert_eq!(names, ["INBOX", "Drafts", "Junk", "Sent", "Trash"]);
}

#[test]
fn concurrent_deliveries_and_sessions_agree_on_uids() {
    let env = Env::new();
    let user = env.user();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (user, stop) = (user.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut folder = user.open(&FolderName::inbox(), false).unwrap();
            let mut seen = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let changes = folder.sync().unwrap();
                assert!(changes.expunged.is_empty());
                assert!(changes.exists >= seen);
                seen = changes.exists;
                let u = uids(&folder);
                assert!(u.windows(2).all(|w| w[0] < w[1]), "{u:?}");
            }
            folder
        })
    };
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let store = env.store.clone();
            let dir = env.tmp.path().to_path_buf();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let envelope = Envelope {
                        received_at: 1_700_000_000,
                        ..Default::default()
                    };
                    let item =
                        crate::message::stored::written(&dir, b"Subject: c\r\n\r\n", envelope);
                    let key = format!("t{t}_{i}");
                    deliver(&store, DOMAIN, USER, &FolderName::inbox(), &item, b"", &key).unwrap();
                    if i % 5 == 0 {
                        let user = store.user(DOMAIN, USER).unwrap();
                        let mut f = user.open(&FolderName::inbox(), false).unwrap();
                        f.sync().unwrap();
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut watched = watcher.join().unwrap();
    std::thread::sleep(Duration::from_millis(10));
    watched.sync().unwrap();
    let fresh = user.open(&FolderName::inbox(), false).unwrap();
    assert_eq!(fresh.len(), 100);
    assert_eq!(uids(&fresh), (1..=100).collect::<Vec<u32>>());
    assert_eq!(uids(&watched), uids(&fresh));
    let recent = watched.messages().iter().filter(|m| m.recent).count();
    assert!(recent <= 100);
}

/// Once the cache holds a message, opening the folder takes its facts from there: the
/// file's own mtime is not looked at again.
#[test]
fn open_uses_the_cache_not_the_files() {
    let env = Env::new();
    env.deliver_n(3);
    let user = env.user();
    let inbox = FolderName::inbox();
    let mut first = user.open(&inbox, false).unwrap();
    let dates = uid_size_date(&mut first);
    drop(first);
    for name in files(&env.root().join("cur")) {
        let path = env.root().join("cur").join(name);
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(12345))
            .unwrap();
    }
    let mut again = user.open(&inbox, false).unwrap();
    let got = uid_size_date(&mut again);
    assert_eq!(got, dates);
}

/// The benchmark's case: a 10,000-message INBOX (files dropped in `new/` as another MDA
/// would). Run with
/// `cargo test --release --lib mailbox::tests::ten_thousand -- --ignored --nocapture`.
#[test]
#[ignore]
fn ten_thousand_messages() {
    let env = Env::new();
    let user = env.user();
    let root = env.root();
    for i in 0..10_000u32 {
        let data = format!("Subject: {i}\n\nbody {i}\n");
        let name = format!(
            "17000{i:05}.M{i}P1.host,S={},W={}",
            data.len(),
            data.len() + 3
        );
        fs::write(root.join("new").join(name), data).unwrap();
    }
    let inbox = FolderName::inbox();
    let t = std::time::Instant::now();
    let first = user.open(&inbox, false).unwrap();
    println!("first open (moves to cur/, UIDs, cache): {:?}", t.elapsed());
    assert_eq!(first.len(), 10_000);
    drop(first);
    let t = std::time::Instant::now();
    for _ in 0..10 {
        drop(user.open(&inbox, false).unwrap());
    }
    println!("open, uidlist and cache current: {:?}", t.elapsed() / 10);
    let mut folder = user.open(&inbox, false).unwrap();
    age_folder(&root);
    folder.sync().unwrap();
    let t = std::time::Instant::now();
    for _ in 0..1000 {
        folder.sync().unwrap();
    }
    println!("sync with nothing changed: {:?}", t.elapsed() / 1000);
    let t = std::time::Instant::now();
    assert_eq!(user.status(&inbox).unwrap().messages, 10_000);
    println!("status: {:?}", t.elapsed());
    let per_message = std::mem::size_of::<Message>() + folder.message(0).name.len();
    println!("memory per message: about {per_message} bytes");
}

/// A session whose view is behind (another renamed or expunged a file) still finds the
/// file by its base name, and never expunges a message whose `\Deleted` someone took off.
#[test]
fn stale_names_are_found_again() {
    let env = Env::new();
    let (mut a, mut b) = two_sessions(&env, 3);
    let deleted = system_flags(Flags::DELETED);
    a.store_flags(0, deleted.clone()).unwrap();
    a.store_flags(1, deleted.clone()).unwrap();
    b.sync().unwrap();
    // a takes \Deleted off message 0 again, behind b's back.
    a.store_flags(0, Flags::default()).unwrap();
    assert!(b.open_file(0).is_ok(), "found under its new name");
    assert_eq!(
        b.expunge(None).unwrap(),
        [1],
        "message 0 is no longer \\Deleted"
    );
    // b expunged message 1 behind a's back; a renames it: gone.
    assert!(matches!(
        a.store_flags(1, Flags::default()),
        Err(StoreError::Expunged)
    ));
    assert!(matches!(a.open_file(1), Err(StoreError::Expunged)));
    let changes = a.sync().unwrap();
    assert_eq!(changes.expunged, [1]);
    assert_eq!(uids(&a), [1, 3]);
}
