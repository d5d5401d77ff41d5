//! Folder views shared between sessions (`shared`): what one session learned is the next
//! one's start, and nothing that changed meanwhile, through tambo or not, is missed.

use super::*;
use std::sync::Arc;

/// A message file put into `cur/` by another program (no uidlist record, no cache record).
fn drop_in(root: &Path, name: &str, data: &[u8]) {
    fs::write(root.join("cur").join(name), data).unwrap();
}

#[test]
fn sessions_share_one_view_until_one_changes_it() {
    let env = Env::new();
    env.deliver_n(3);
    let user = env.user();
    let inbox = FolderName::inbox();
    let first = user.open(&inbox, false).unwrap();
    assert!(
        first.messages().iter().all(|m| m.recent),
        "moved to cur/ here"
    );
    age_folder(&env.root());
    let mut a = user.open(&inbox, false).unwrap();
    let b = user.open(&inbox, true).unwrap();
    assert!(Arc::ptr_eq(&a.messages, &b.messages), "one copy for both");
    assert!(
        a.messages().iter().all(|m| !m.recent),
        "\\Recent stays with the session that moved them"
    );
    a.store_flags(0, system_flags(Flags::SEEN)).unwrap();
    assert!(!Arc::ptr_eq(&a.messages, &b.messages), "copied on write");
    assert_eq!(b.message(0).system, 0, "the other view is as it was");
}

#[test]
fn changes_by_one_session_are_seen_by_the_next() {
    let env = Env::new();
    env.deliver_n(4);
    let user = env.user();
    let inbox = FolderName::inbox();
    let mut a = user.open(&inbox, false).unwrap();
    a.store_flags(0, system_flags(Flags::SEEN | Flags::FLAGGED))
        .unwrap();
    a.store_flags(1, system_flags(Flags::DELETED)).unwrap();
    assert_eq!(a.expunge(None).unwrap(), [1]);
    // Another session, open all along, and one opened now, agree with the disk.
    let mut b = user.open(&inbox, false).unwrap();
    assert_eq!(uids(&b), [1, 3, 4]);
    assert_eq!(b.message(0).system, Flags::SEEN | Flags::FLAGGED);
    a.store_flags(2, system_flags(Flags::ANSWERED)).unwrap();
    let changes = b.sync().unwrap();
    assert_eq!(changes.flags, [2]);
    assert_eq!(b.message(2).system, Flags::ANSWERED);
    drop((a, b));
    age_folder(&env.root());
    let c = user.open(&inbox, true).unwrap();
    assert_eq!(uids(&c), [1, 3, 4]);
    let systems: Vec<u8> = c.messages().iter().map(|m| m.system).collect();
    assert_eq!(systems, [Flags::SEEN | Flags::FLAGGED, 0, Flags::ANSWERED]);
}

#[test]
fn a_file_added_by_another_program_is_seen() {
    let env = Env::new();
    env.deliver_n(2);
    let user = env.user();
    let inbox = FolderName::inbox();
    drop(user.open(&inbox, false).unwrap());
    let root = env.root();
    age_folder(&root);
    drop(user.open(&inbox, false).unwrap()); // a view whose looks are old: trusted
    drop_in(
        &root,
        "1800000000.M1P1.other,S=20:2,S",
        b"Subject: other\n\nhi\n",
    );
    let folder = user.open(&inbox, false).unwrap();
    assert_eq!(uids(&folder), [1, 2, 3]);
    assert_eq!(folder.message(2).system, Flags::SEEN);
    assert_eq!(folder.uidnext, 4);
    drop(folder);

    // Added in the same clock tick as the look that made the view: the directory's stamp
    // is the same, but too fresh to be trusted (scan.rs).
    let cur = root.join("cur");
    let before = fs::metadata(&cur).unwrap().modified().unwrap();
    drop(user.open(&inbox, false).unwrap());
    drop_in(
        &root,
        "1800000001.M2P1.other,S=20:2,",
        b"Subject: same tick\n\n",
    );
    fs::File::open(&cur).unwrap().set_modified(before).unwrap();
    let folder = user.open(&inbox, false).unwrap();
    assert_eq!(
        uids(&folder),
        [1, 2, 3, 4],
        "a fresh stamp is looked behind"
    );
}

#[test]
fn a_file_removed_by_another_program_is_gone() {
    let env = Env::new();
    env.deliver_n(3);
    let user = env.user();
    let inbox = FolderName::inbox();
    let folder = user.open(&inbox, false).unwrap();
    let path = folder.path_of(folder.message(1));
    drop(folder);
    age_folder(&env.root());
    drop(user.open(&inbox, false).unwrap());
    fs::remove_file(path).unwrap();
    assert_eq!(uids(&user.open(&inbox, false).unwrap()), [1, 3]);
}

#[test]
fn a_damaged_or_replaced_cache_is_read_again_and_rebuilt() {
    let env = Env::new();
    env.deliver_n(3);
    let user = env.user();
    let inbox = FolderName::inbox();
    let path = env.root().join(cache::FILE);
    let mut folder = user.open(&inbox, false).unwrap();
    let want = folder.summary(1).unwrap().clone();
    drop(folder); // shares its summaries
    let good = fs::read(&path).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "garbage appended",
            [&good[..], b"R00000000 5\nabcde\nzzz"].concat(),
        ),
        ("torn record appended", [&good[..], b"R0000"].concat()),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("emptied", Vec::new()),
    ];
    for (what, content) in cases {
        fs::write(&path, &content).unwrap();
        let mut folder = user.open(&inbox, true).unwrap();
        assert_eq!(uids(&folder), [1, 2, 3], "{what}");
        assert_eq!(folder.summary(1).unwrap(), &want, "{what}");
        drop(folder);
        let parsed = cache::parse(&fs::read(&path).unwrap(), 0);
        assert!(!parsed.damaged && !parsed.torn_tail, "{what}: rebuilt");
    }
    // Replaced by a file whose positions differ: the view's are not used.
    let mut other = b"tambo-cache 1\n".to_vec();
    other.extend_from_slice(&cache::record("x", 1, 1, None).0);
    fs::write(env.root().join("replacement"), &other).unwrap();
    fs::rename(env.root().join("replacement"), &path).unwrap();
    let mut folder = user.open(&inbox, true).unwrap();
    assert_eq!(folder.summary(1).unwrap(), &want, "replaced");
}

#[test]
fn summaries_learned_by_one_session_serve_the_next() {
    let env = Env::new();
    let user = env.user();
    let inbox = FolderName::inbox();
    // Named with their sizes: opening reads neither file, so neither has a summary yet.
    for (n, subject) in ["one", "two"].iter().enumerate() {
        let data = format!("Subject: {subject}\n\nbody\n");
        let name = format!(
            "170000000{n}.M{n}P1.h,S={},W={}:2,",
            data.len(),
            data.len() + 3
        );
        drop_in(&env.root(), &name, data.as_bytes());
    }
    let mut a = user.open(&inbox, false).unwrap();
    assert!(a.messages().iter().all(|m| m.summary.is_none()));
    let want = a.summary(0).unwrap().clone();
    a.sync().unwrap(); // shares the view
    let b = user.open(&inbox, true).unwrap();
    assert_eq!(b.message(0).summary, a.message(0).summary, "from the view");
    assert_eq!(b.message(1).summary, None);
    drop((a, b));
    let mut c = user.open(&inbox, true).unwrap();
    assert_eq!(c.summary(0).unwrap(), &want);
    let second = c.summary(1).unwrap().clone();
    drop(c); // a session that ends shares what it learned
    let d = user.open(&inbox, true).unwrap();
    let at = d.message(1).summary.expect("learned by the one before");
    let cached = d.cache.summary(at).unwrap();
    assert_eq!(cached, second);
}

#[test]
fn a_folder_made_again_under_the_same_name_is_another_one() {
    let env = Env::new();
    let user = env.user();
    let foo = name("Foo");
    user.create(&foo).unwrap();
    user.append(&foo, &mut &b"Subject: a\n\n"[..], &Flags::default(), None)
        .unwrap();
    let old = user.open(&foo, false).unwrap();
    let (uidvalidity, len) = (old.uidvalidity, old.len());
    drop(old);
    assert_eq!(len, 1);
    user.delete(&foo).unwrap();
    user.create(&foo).unwrap();
    let again = user.open(&foo, false).unwrap();
    assert_eq!(again.len(), 0);
    assert_ne!(again.uidvalidity, uidvalidity);

    // A uidlist replaced behind tambo's back (another UIDVALIDITY) with a view kept.
    let inbox = FolderName::inbox();
    env.deliver_n(2);
    let before = user.open(&inbox, false).unwrap().uidvalidity;
    fs::remove_file(env.root().join("dovecot-uidlist")).unwrap();
    let after = user.open(&inbox, false).unwrap();
    assert_ne!(after.uidvalidity, before);
    assert_eq!(after.len(), 2);
}

#[test]
fn messages_a_read_only_session_left_in_new_are_recent_to_the_next_writer() {
    let env = Env::new();
    env.deliver_n(2);
    let user = env.user();
    let inbox = FolderName::inbox();
    let examined = user.open(&inbox, true).unwrap();
    assert!(examined.messages().iter().all(|m| m.in_new));
    drop(examined);
    let selected = user.open(&inbox, false).unwrap();
    assert!(selected.messages().iter().all(|m| m.recent && !m.in_new));
    assert_eq!(files(&env.root().join("new")).len(), 0);
    assert_eq!(files(&env.root().join("cur")).len(), 2);
    drop(selected);
    let next = user.open(&inbox, false).unwrap();
    assert!(next.messages().iter().all(|m| !m.recent), "recent once");
}

#[test]
fn the_view_of_a_large_folder_is_shared_not_copied() {
    let env = Env::new();
    let user = env.user();
    let root = env.root();
    for i in 0..2_000u32 {
        let data = format!("Subject: {i}\n\nbody {i}\n");
        let name = format!(
            "17000{i:05}.M{i}P1.host,S={},W={}:2,S",
            data.len(),
            data.len() + 3
        );
        fs::write(root.join("cur").join(name), data).unwrap();
    }
    let inbox = FolderName::inbox();
    drop(user.open(&inbox, false).unwrap());
    age_folder(&root);
    let sessions: Vec<Folder> = (0..20).map(|_| user.open(&inbox, false).unwrap()).collect();
    let shared = &sessions[0].messages;
    assert!(sessions.iter().all(|s| Arc::ptr_eq(&s.messages, shared)));
    // The registry's copy and the sessions': one list of 2,000 messages.
    assert_eq!(Arc::strong_count(shared), sessions.len() + 1);
    assert_eq!(env.store.shared().held(), (1, 2_000));
}
