//! Made-up trees as Dovecot and Courier leave them: what the survey finds, what the import
//! copies, and that tambo's store then serves the same UIDs, UIDVALIDITY and keywords.

use super::copy::{self, CopyError};
use super::survey::{Severity, UidSource, survey};
use crate::mailbox::{FolderName, Store};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const GUID: &str = "0123456789abcdef0123456789abcdef";

/// A folder at `dir` with message files (`cur/...` or `new/...`) and the other files given.
fn folder(dir: &Path, messages: &[&str], files: &[(&str, &str)]) {
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(dir.join(sub)).unwrap();
    }
    for m in messages {
        fs::write(dir.join(m), format!("Subject: {m}\r\n\r\nbody\r\n")).unwrap();
    }
    for (name, text) in files {
        fs::write(dir.join(name), text).unwrap();
    }
}

/// A tree as Dovecot leaves it: INBOX with two messages (one with keyword letter a), Archive
/// with one and P/O fields, index files, subscriptions.
fn dovecot_tree(root: &Path) {
    let inbox_list = format!("3 V1700000001 N5 G{GUID}\n3 W20 :100.a.host,S=20\n4 :101.b.host\n");
    folder(
        root,
        &["cur/100.a.host,S=20:2,Sa", "new/101.b.host"],
        &[
            ("dovecot-uidlist", &inbox_list),
            ("dovecot-keywords", "0 $Junk\n1 Work\n"),
            ("subscriptions", "V\t2\n\nINBOX\nArchive\n"),
            ("dovecot.index", "cache"),
            ("dovecot.list.index.log", "cache"),
        ],
    );
    let archive_list = format!("3 V1700000002 N8 G{GUID}\n7 Pold-7 O1 :200.c.host\n");
    folder(
        &root.join(".Archive"),
        &["cur/200.c.host:2,RS"],
        &[
            ("dovecot-uidlist", &archive_list),
            ("dovecot.index.cache", "x"),
        ],
    );
}

fn differs(s: &super::Survey) -> Vec<&str> {
    s.findings
        .iter()
        .filter(|f| f.severity == Severity::Differs)
        .map(|f| f.text.as_str())
        .collect()
}

#[test]
fn a_dovecot_tree_differs_in_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    dovecot_tree(tmp.path());
    let s = survey(tmp.path()).unwrap();
    assert_eq!(differs(&s), Vec::<&str>::new(), "{:?}", s.findings);
    let names: Vec<&str> = s.folders.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["INBOX", "Archive"]);
    assert_eq!(
        s.folders[0].uids,
        UidSource::Dovecot {
            uidvalidity: 1700000001
        }
    );
    assert_eq!(s.folders[0].keywords, ["$Junk", "Work"]);
    assert_eq!(s.folders[0].files.len(), 2);
    let notes: Vec<&str> = s.findings.iter().map(|f| f.text.as_str()).collect();
    assert!(notes[0].starts_with("3 Dovecot index file(s)"), "{notes:?}");
}

/// Each case: what is done to a Dovecot tree, and a piece of the one finding that differs.
#[test]
fn what_would_differ() {
    type Damage = fn(&Path);
    let cases: &[(&str, Damage, &str)] = &[
        (
            "no uidlist",
            |r| fs::remove_file(r.join(".Archive/dovecot-uidlist")).unwrap(),
            "Archive: no dovecot-uidlist: a new UIDVALIDITY, clients download its 1",
        ),
        (
            "a file without a record",
            |r| fs::write(r.join("new/102.d.host"), "x").unwrap(),
            "INBOX: 1 message(s) without a UID",
        ),
        (
            "a refused name",
            |r| folder(&r.join(".Bad..Name"), &["cur/1.x.host"], &[]),
            ".Bad..Name: a folder name tambo refuses (",
        ),
        (
            "a name not in modified UTF-7",
            |r| folder(&r.join(".Entwürfe"), &[], &[]),
            ".Entwürfe: a folder name tambo refuses",
        ),
        (
            "a keyword past 26 letters",
            |r| fs::write(r.join("dovecot-keywords"), "0 $Junk\n30 Late\n").unwrap(),
            "INBOX: keyword \"Late\" is number 30",
        ),
        (
            "a keyword tambo refuses",
            |r| fs::write(r.join("dovecot-keywords"), "0 $Junk\n1 a(b\n").unwrap(),
            "INBOX: dovecot-keywords line \"1 a(b\"",
        ),
        (
            "a damaged uidlist line",
            |r| {
                let text = format!("3 V1700000001 N5 G{GUID}\n3 :100.a.host,S=20\n2 :101.b.host\n");
                fs::write(r.join("dovecot-uidlist"), text).unwrap()
            },
            "INBOX: dovecot-uidlist: line 3: UID 2 out of order",
        ),
        (
            "Courier's keywords",
            |r| fs::create_dir(r.join("courierimapkeywords")).unwrap(),
            "courierimapkeywords/",
        ),
    ];
    for (what, damage, want) in cases {
        let tmp = tempfile::tempdir().unwrap();
        dovecot_tree(tmp.path());
        damage(tmp.path());
        let s = survey(tmp.path()).unwrap();
        let found = differs(&s);
        assert!(
            found.iter().any(|f| f.starts_with(want)),
            "{what}: {found:?}"
        );
        // The unrecorded-file case adds one; the damaged line one more (its file is unrecorded).
        assert!(found.len() <= 2, "{what}: {found:?}");
    }
}

#[test]
fn notes_differ_in_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    dovecot_tree(root);
    fs::write(root.join("maildirsize"), "1000S\n10 1\n").unwrap();
    fs::write(root.join("tmp/1.half.host"), "x").unwrap();
    // A record whose file was expunged by hand.
    let list = format!("3 V1700000001 N6 G{GUID}\n3 :100.a.host,S=20\n4 :101.b.host\n5 :gone\n");
    fs::write(root.join("dovecot-uidlist"), list).unwrap();
    folder(&root.join(".Empty"), &[], &[]);
    fs::write(root.join("dovecot-uidlist.lock"), "").unwrap();
    let s = survey(root).unwrap();
    assert_eq!(differs(&s), Vec::<&str>::new());
    let text: Vec<&str> = s.findings.iter().map(|f| f.text.as_str()).collect();
    for want in [
        "maildirsize not copied",
        "INBOX: 1 file(s) in tmp/",
        "INBOX: 1 uidlist record(s) without a file",
        "Empty: no dovecot-uidlist, empty",
        "dovecot-uidlist.lock: Dovecot may be running",
    ] {
        assert!(text.iter().any(|t| t.starts_with(want)), "{want}: {text:?}");
    }
}

#[test]
fn not_a_maildir_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(survey(tmp.path()).is_err());
}

#[test]
fn import_keeps_uids_keywords_subscriptions_and_dates() {
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("old");
    dovecot_tree(&old);
    let date = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
    fs::File::options()
        .write(true)
        .open(old.join("new/101.b.host"))
        .unwrap()
        .set_modified(date)
        .unwrap();
    let mail = tmp.path().join("mail");
    let target = mail.join("example.org/bob");
    let s = survey(&old).unwrap();
    let done = copy::import(&s, &target).unwrap();
    assert_eq!(done.linked + done.copied, 3);
    // Nothing of Dovecot's caches, nothing left aside.
    assert!(!target.join("dovecot.index").exists());
    assert!(!target.join(".Archive/dovecot.index.cache").exists());
    let leftovers: Vec<_> = fs::read_dir(mail.join("example.org")).unwrap().collect();
    assert_eq!(leftovers.len(), 1);
    assert_eq!(
        fs::read(target.join(".Archive/dovecot-uidlist")).unwrap(),
        fs::read(old.join(".Archive/dovecot-uidlist")).unwrap(),
        "the uidlist as it was: P and O fields kept for POP3"
    );
    let moved = fs::metadata(target.join("new/101.b.host")).unwrap();
    assert_eq!(moved.mtime(), 1_600_000_000, "INTERNALDATE kept");
    // tambo's store serves what Dovecot served.
    let store = Store::new(mail.clone(), None).with_hostname("mx.test");
    let user = store.user("example.org", "bob").unwrap();
    let inbox = user.open(&FolderName::inbox(), true).unwrap();
    assert_eq!(inbox.uidvalidity, 1700000001);
    assert_eq!(inbox.uidnext, 5);
    let uids: Vec<u32> = (0..inbox.len()).map(|i| inbox.message(i).uid).collect();
    assert_eq!(uids, [3, 4]);
    assert_eq!(inbox.flags(0).keywords, ["$Junk"]);
    let archive = user
        .open(&FolderName::parse("Archive").unwrap(), true)
        .unwrap();
    assert_eq!(
        (archive.uidvalidity, archive.message(0).uid),
        (1700000002, 7)
    );
    let pop3 = archive.pop3_fields().unwrap();
    assert_eq!(pop3[&7].uidl.as_deref(), Some("old-7"));
    let subs: Vec<String> = user
        .subscriptions()
        .unwrap()
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert!(subs.contains(&"Archive".to_string()), "{subs:?}");

    // A second import into the same user, now with mail: refused, nothing changed.
    let again = copy::import(&s, &target);
    assert!(matches!(again, Err(CopyError::HasMail(_))), "{again:?}");
    assert_eq!(fs::read_dir(mail.join("example.org")).unwrap().count(), 1);
}

#[test]
fn empty_default_folders_are_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("old");
    dovecot_tree(&old);
    let mail = tmp.path().join("mail");
    let store = Store::new(mail.clone(), None);
    store.user("example.org", "bob").unwrap(); // a first login: empty INBOX, Sent, ...
    let target = mail.join("example.org/bob");
    copy::import(&survey(&old).unwrap(), &target).unwrap();
    assert!(
        !target.join(".Sent").exists(),
        "the empty defaults were replaced"
    );
    assert!(target.join(".Archive/cur").is_dir());
}

#[test]
fn a_courier_tree_is_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("old");
    folder(
        &old,
        &["cur/100.a.host:2,S"],
        &[
            ("courierimapuiddb", "1 4242 10\n9 100.a.host\n"),
            ("courierimapsubscribed", "INBOX.Sent\n"),
        ],
    );
    folder(
        &old.join(".Sent"),
        &[],
        &[("courierimapuiddb", "1 4243 1\n")],
    );
    let s = survey(&old).unwrap();
    assert_eq!(s.folders[0].uids, UidSource::Courier { uidvalidity: 4242 });
    // POP3 UIDLs are the one thing that changes (Courier's UID<uid>-<uidv>).
    let found = differs(&s);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().all(|f| f.contains("POP3 UIDLs")), "{found:?}");
    let mail = tmp.path().join("mail");
    let target = mail.join("example.org/bob");
    copy::import(&s, &target).unwrap();
    let store = Store::new(mail, None);
    let user = store.user("example.org", "bob").unwrap();
    let inbox = user.open(&FolderName::inbox(), true).unwrap();
    assert_eq!((inbox.uidvalidity, inbox.message(0).uid), (4242, 9));
    let subs: Vec<String> = user
        .subscriptions()
        .unwrap()
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert!(subs.contains(&"Sent".to_string()), "{subs:?}");
}
