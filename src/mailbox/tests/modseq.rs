//! Modseqs (`modseq`) as sessions and restarts see them: never lower under one
//! UIDVALIDITY, whatever happened to `tambo-modseq` or to the files.

use super::*;

fn highest(folder: &Folder) -> u64 {
    folder.modseqs(true).unwrap().lock().highest()
}

fn modseq_of(folder: &Folder, uid: u32) -> u64 {
    folder.modseqs(false).unwrap().lock().of(uid).unwrap()
}

#[test]
fn never_lower_across_reopen_lost_file_and_external_rename() {
    let env = Env::new();
    env.deliver_n(3);
    let inbox = FolderName::inbox();
    let mut a = env.user().open(&inbox, false).unwrap();
    let first = highest(&a);
    assert!(first > 0);
    a.store_flags(0, system_flags(Flags::SEEN)).unwrap();
    let ms = a.modseqs(false).unwrap();
    let stored = ms.lock().touch(a.message(0));
    assert!(stored > first);
    assert_eq!(highest(&a), stored, "the same flags: no bump");
    drop((a, ms));

    // A restart: a new store over the same files.
    let again = Store::new(env.tmp.path().join("mail"), None).with_hostname("mx.test");
    let user = again.user(DOMAIN, USER).unwrap();
    let b = user.open(&inbox, false).unwrap();
    let after_restart = highest(&b);
    assert!(after_restart >= stored);
    assert_eq!(modseq_of(&b, 1), stored, "per-message modseqs survive");
    drop(b);

    // Another program sets \Flagged on message 2 by renaming its file.
    let cur = env.root().join("cur");
    let name = files(&cur).into_iter().nth(1).unwrap();
    let renamed = format!("{}:2,F", name.split(':').next().unwrap());
    fs::rename(cur.join(&name), cur.join(&renamed)).unwrap();
    age_folder(&env.root());
    let restarted = Store::new(env.tmp.path().join("mail"), None).with_hostname("mx.test");
    let c = restarted
        .user(DOMAIN, USER)
        .unwrap()
        .open(&inbox, false)
        .unwrap();
    let top = highest(&c);
    assert!(top > after_restart);
    assert_eq!(modseq_of(&c, 2), top, "the rename is a change");
    assert!(modseq_of(&c, 3) < top);
    drop(c);

    // The file lost: counting starts again above everything handed out.
    fs::remove_file(env.root().join("tambo-modseq")).unwrap();
    let lost = Store::new(env.tmp.path().join("mail"), None).with_hostname("mx.test");
    let d = lost
        .user(DOMAIN, USER)
        .unwrap()
        .open(&inbox, false)
        .unwrap();
    let ms = d.modseqs(true).unwrap();
    let log = ms.lock();
    assert!(log.highest() > top);
    assert!(
        log.floor() > top,
        "tombstones from before the loss are not claimed"
    );
    assert_eq!(log.vanished_since(top), None);
}

#[test]
fn another_sessions_changes_and_expunges_are_recorded_at_its_sync() {
    let env = Env::new();
    let (mut a, mut b) = two_sessions(&env, 3);
    let start = highest(&b);
    a.store_flags(0, system_flags(Flags::DELETED)).unwrap();
    a.store_flags(1, system_flags(Flags::FLAGGED)).unwrap();
    a.expunge(None).unwrap();
    let changes = b.sync().unwrap();
    assert_eq!(changes.expunged, [0]);
    let ms = b.modseqs(true).unwrap();
    let log = ms.lock();
    assert!(log.highest() > start);
    assert_eq!(log.vanished_since(start), Some(vec![1]));
    assert_eq!(log.of(2), Some(log.highest()));
    assert!(log.of(3).unwrap() <= start);
}

#[test]
fn a_dovecot_maildir_gets_a_nonzero_highest() {
    let env = Env::new();
    env.deliver_n(2);
    drop(env.user().open(&FolderName::inbox(), false).unwrap());
    // As Dovecot would leave it: no tambo-modseq.
    let _ = fs::remove_file(env.root().join("tambo-modseq"));
    let fresh = Store::new(env.tmp.path().join("mail"), None).with_hostname("mx.test");
    let folder = fresh
        .user(DOMAIN, USER)
        .unwrap()
        .open(&FolderName::inbox(), true)
        .unwrap();
    let h = highest(&folder);
    assert!(h > 1_000_000_000_000_000, "seeded from the clock: {h}");
    assert_eq!(modseq_of(&folder, 1), h);
}
