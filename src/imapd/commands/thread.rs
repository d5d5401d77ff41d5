//! THREAD and UID THREAD (RFC 5256 §3): ORDEREDSUBJECT and REFERENCES over the messages a
//! search finds, from the keys `tambo-cache` keeps (`summary::SortKeys`). The algorithms
//! are pure functions of those keys ([`ordered_subject`], [`references`]), written as RFC
//! 5256 §2.2 lays them out (Jamie Zawinski's threading).

use crate::imapd::commands::sort::keys_of;
use crate::imapd::commands::{Selected, answer_line, search, with_folder};
use crate::imapd::conn::Conn;
use crate::imapd::wire;
use crate::mailbox::{StoreError, summary::SortKeys};
use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::core::Charset;
use imap_codec::imap_types::extensions::thread::ThreadingAlgorithm;
use imap_codec::imap_types::search::SearchKey;
use std::collections::HashMap;

/// One message to thread: the number to print (sequence number or UID), its sent date
/// (RFC 5256 §2.2: the Date: field, else INTERNALDATE) and keys.
pub struct Item<'a> {
    pub number: u32,
    pub date: i64,
    pub keys: &'a SortKeys,
}

/// A thread node: a message (an index into the items), or a dummy holding its children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub item: Option<usize>,
    pub children: Vec<Node>,
}

pub async fn thread(
    conn: &mut Conn,
    tag: &str,
    algorithm: &ThreadingAlgorithm<'_>,
    charset: &Charset<'_>,
    criteria: &[SearchKey<'_>],
    uid: bool,
) {
    let references = match algorithm {
        ThreadingAlgorithm::References => true,
        ThreadingAlgorithm::OrderedSubject => false,
        ThreadingAlgorithm::Other(_) => return conn.bad(tag, "Unsupported threading algorithm"),
    };
    if search::charset_refused(conn, tag, charset) {
        return;
    }
    let key = search::all_of(criteria);
    let done = with_folder(conn, move |sel: &mut Selected, _| {
        let key = key.into_static();
        let (hits, _) = search::matching(sel, &key)?;
        let keys = keys_of(sel, &hits)?;
        let items: Vec<Item<'_>> = hits
            .iter()
            .zip(&keys)
            .map(|(&i, keys)| {
                let m = sel.folder.message(i);
                Item {
                    number: if uid { m.uid } else { i as u32 + 1 },
                    date: keys.date.unwrap_or(m.date),
                    keys,
                }
            })
            .collect();
        let threads = match references {
            true => self::references(&items),
            false => ordered_subject(&items),
        };
        let mut line = b"* THREAD ".to_vec();
        for t in &threads {
            write_thread(&mut line, t, &items);
        }
        line.extend_from_slice(b"\r\n");
        Ok::<_, StoreError>(line)
    })
    .await;
    answer_line(conn, tag, "THREAD", done).await;
}

/// The order of siblings: sent date, then the order in the folder.
fn sort_key(node: &Node, items: &[Item<'_>]) -> (i64, u32) {
    match node.item {
        Some(i) => (items[i].date, items[i].number),
        // RFC 5256 §2.2 (4): a dummy sorts as its first child.
        None => node
            .children
            .first()
            .map_or((i64::MAX, u32::MAX), |c| sort_key(c, items)),
    }
}

/// RFC 5256 §3 ORDEREDSUBJECT: messages grouped by base subject, each group a parent (its
/// first message by sent date) and the others its children; groups by their first date.
pub fn ordered_subject(items: &[Item<'_>]) -> Vec<Node> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| {
        (&items[a].keys.subject, items[a].date, items[a].number).cmp(&(
            &items[b].keys.subject,
            items[b].date,
            items[b].number,
        ))
    });
    let mut threads: Vec<Node> = Vec::new();
    let mut last: Option<&str> = None;
    for i in order {
        let subject = items[i].keys.subject.as_str();
        let leaf = Node {
            item: Some(i),
            children: Vec::new(),
        };
        match threads.last_mut() {
            Some(t) if last == Some(subject) => t.children.push(leaf),
            _ => threads.push(leaf),
        }
        last = Some(subject);
    }
    threads.sort_by_key(|t| sort_key(t, items));
    threads
}

/// A container of RFC 5256 §2.2 during threading.
#[derive(Default)]
struct Container {
    item: Option<usize>,
    parent: Option<usize>,
    children: Vec<usize>,
}

struct Table {
    c: Vec<Container>,
}

impl Table {
    fn new_container(&mut self) -> usize {
        self.c.push(Container::default());
        self.c.len() - 1
    }

    /// Whether `a` is `b` or one of `b`'s ancestors... that is, whether `b` descends from `a`.
    fn descends(&self, b: usize, a: usize) -> bool {
        let mut at = Some(b);
        while let Some(x) = at {
            if x == a {
                return true;
            }
            at = self.c[x].parent;
        }
        false
    }

    fn unlink(&mut self, child: usize) {
        if let Some(p) = self.c[child].parent.take() {
            self.c[p].children.retain(|&x| x != child);
        }
    }

    fn link(&mut self, parent: usize, child: usize) {
        self.unlink(child);
        self.c[child].parent = Some(parent);
        self.c[parent].children.push(child);
    }

    /// The tree below `at` as nodes, dummies pruned (RFC 5256 §2.2 (3)); `top` when `at`
    /// is a child of the root.
    fn prune(&self, at: usize, top: bool) -> Vec<Node> {
        let children: Vec<Node> = self.c[at]
            .children
            .iter()
            .flat_map(|&x| self.prune(x, false))
            .collect();
        match self.c[at].item {
            Some(item) => vec![Node {
                item: Some(item),
                children,
            }],
            // (A) an empty dummy goes; (B) its children take its place, unless it is at
            // the top and has more than one.
            None if top && children.len() > 1 => vec![Node {
                item: None,
                children,
            }],
            None => children,
        }
    }
}

/// RFC 5256 §2.2 REFERENCES.
pub fn references(items: &[Item<'_>]) -> Vec<Node> {
    let mut t = Table { c: Vec::new() };
    let mut ids: HashMap<&str, usize> = HashMap::new();
    // (1) Containers and links from Message-ID and References.
    for (i, item) in items.iter().enumerate() {
        let id = item.keys.message_id.as_str();
        // (A) A missing or duplicate Message-ID is a unique one.
        let me = match ids.get(id).copied() {
            // Made by an earlier message's References.
            Some(c) if t.c[c].item.is_none() => c,
            Some(_) => t.new_container(),
            None if id.is_empty() => t.new_container(),
            None => {
                let c = t.new_container();
                ids.insert(id, c);
                c
            }
        };
        t.c[me].item = Some(i);
        // (B) Each reference the parent of the next, unless linked already or a loop.
        let mut prev: Option<usize> = None;
        for r in &item.keys.references {
            let c = match ids.get(r.as_str()) {
                Some(&c) => c,
                None => {
                    let c = t.new_container();
                    ids.insert(r.as_str(), c);
                    c
                }
            };
            if let Some(p) = prev
                && t.c[c].parent.is_none()
                && !t.descends(p, c)
            {
                t.link(p, c);
            }
            prev = Some(c);
        }
        // (C) The last reference is the message's parent (the newest link wins).
        match prev {
            Some(p) if p != me && !t.descends(p, me) => t.link(p, me),
            Some(_) => {}
            None => t.unlink(me),
        }
    }
    // (2) The root set; (3) dummies pruned.
    let roots: Vec<usize> = (0..t.c.len())
        .filter(|&c| t.c[c].parent.is_none())
        .collect();
    let mut top: Vec<Node> = roots.iter().flat_map(|&c| t.prune(c, true)).collect();
    // (4) Sorted by date, dummies by their first child.
    for node in &mut top {
        sort_tree(node, items);
    }
    top.sort_by_key(|n| sort_key(n, items));
    // (5) Threads of the same base subject brought together.
    let top = group_by_subject(top, items);
    // (6) Siblings by date, everywhere.
    let mut top = top;
    for node in &mut top {
        sort_tree(node, items);
    }
    top.sort_by_key(|n| sort_key(n, items));
    top
}

fn sort_tree(node: &mut Node, items: &[Item<'_>]) {
    for c in &mut node.children {
        sort_tree(c, items);
    }
    node.children.sort_by_key(|n| sort_key(n, items));
}

/// The base subject of a top node (a dummy's: its first child's) and whether it is a
/// reply's.
fn subject_of<'a>(node: &Node, items: &'a [Item<'_>]) -> Option<(&'a str, bool)> {
    let item = match node.item {
        Some(i) => i,
        None => node.children.first()?.item?,
    };
    let keys = items[item].keys;
    Some((keys.subject.as_str(), keys.is_reply)).filter(|(s, _)| !s.is_empty())
}

/// RFC 5256 §2.2 (5).
fn group_by_subject(top: Vec<Node>, items: &[Item<'_>]) -> Vec<Node> {
    // (A) The subject table: which top node each subject goes to.
    let mut table: HashMap<&str, usize> = HashMap::new();
    for (n, node) in top.iter().enumerate() {
        let Some((subject, reply)) = subject_of(node, items) else {
            continue;
        };
        match table.get(subject) {
            None => {
                table.insert(subject, n);
            }
            Some(&old) => {
                let old_node = &top[old];
                let old_reply = subject_of(old_node, items).is_some_and(|s| s.1);
                let better = (node.item.is_none() && old_node.item.is_some())
                    || (old_node.item.is_some() && old_reply && !reply && node.item.is_some());
                if better {
                    table.insert(subject, n);
                }
            }
        }
    }
    // (B) Each other node with that subject merged into the table's.
    let mut slots: Vec<Option<Node>> = top.into_iter().map(Some).collect();
    for n in 0..slots.len() {
        let Some(node) = slots[n].as_ref() else {
            continue;
        };
        let Some((subject, reply)) = subject_of(node, items) else {
            continue;
        };
        let Some(&target) = table.get(subject) else {
            continue;
        };
        if target == n {
            continue;
        }
        let Some(this) = slots[n].take() else {
            continue;
        };
        let Some(that) = slots[target].take() else {
            slots[n] = Some(this);
            continue;
        };
        let that_reply = subject_of(&that, items).is_some_and(|s| s.1);
        let merged = match (this.item.is_none(), that.item.is_none()) {
            // Both dummies: one holds the children of both.
            (true, true) => {
                let mut that = that;
                that.children.extend(this.children);
                that
            }
            // One dummy: the message becomes one of its children.
            (true, false) => {
                let mut this = this;
                this.children.push(that);
                this
            }
            (false, true) => {
                let mut that = that;
                that.children.push(this);
                that
            }
            // A reply under the message it replies to.
            (false, false) if !that_reply && reply => {
                let mut that = that;
                that.children.push(this);
                that
            }
            // Otherwise siblings under a new dummy.
            (false, false) => Node {
                item: None,
                children: vec![that, this],
            },
        };
        slots[target] = Some(merged);
    }
    slots.into_iter().flatten().collect()
}

/// `(...)` of one thread (RFC 5256 §4 `thread-list`).
fn write_thread(out: &mut Vec<u8>, node: &Node, items: &[Item<'_>]) {
    out.push(b'(');
    write_members(out, node, items);
    out.push(b')');
}

/// A chain of single children as numbers, then nested lists where it branches.
fn write_members(out: &mut Vec<u8>, node: &Node, items: &[Item<'_>]) {
    let mut at = node;
    let mut first = true;
    loop {
        if let Some(i) = at.item {
            if !first {
                out.push(b' ');
            }
            wire::push_fmt(out, format_args!("{}", items[i].number));
            first = false;
        }
        match at.children.as_slice() {
            [] => return,
            [only] if at.item.is_some() => at = only,
            many => {
                if !first {
                    out.push(b' ');
                }
                for c in many {
                    write_thread(out, c, items);
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (number, date, subject, reply, message id, references).
    type Case<'a> = (u32, i64, &'a str, bool, &'a str, &'a [&'a str]);

    fn keys(cases: &[Case<'_>]) -> Vec<SortKeys> {
        cases
            .iter()
            .map(|&(_, date, subject, is_reply, id, refs)| SortKeys {
                date: Some(date),
                subject: subject.into(),
                is_reply,
                message_id: id.into(),
                references: refs.iter().map(|r| r.to_string()).collect(),
                ..SortKeys::default()
            })
            .collect()
    }

    fn render(cases: &[Case<'_>], references: bool) -> String {
        let keys = keys(cases);
        let items: Vec<Item<'_>> = cases
            .iter()
            .zip(&keys)
            .map(|(c, keys)| Item {
                number: c.0,
                date: c.1,
                keys,
            })
            .collect();
        let threads = match references {
            true => super::references(&items),
            false => ordered_subject(&items),
        };
        let mut out = Vec::new();
        for t in &threads {
            write_thread(&mut out, t, &items);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn ordered_subject_groups_by_base_subject_then_date() {
        let cases: [Case<'_>; 5] = [
            (1, 10, "A", false, "", &[]),
            (2, 5, "B", false, "", &[]),
            (3, 20, "A", true, "", &[]),
            (4, 30, "B", true, "", &[]),
            (5, 40, "A", true, "", &[]),
        ];
        assert_eq!(render(&cases, false), "(2 4)(1 (3)(5))");
    }

    #[test]
    fn references_chains_branches_and_dummies() {
        let cases: [Case<'_>; 7] = [
            (1, 10, "A", false, "<1>", &[]),
            (2, 20, "A", true, "<2>", &["<1>"]),
            (3, 30, "A", true, "<3>", &["<1>", "<2>"]),
            (4, 25, "A", true, "<4>", &["<1>"]),
            // Parent never seen: a dummy with two children stays at the top.
            (5, 50, "X", true, "<5>", &["<gone>"]),
            (6, 60, "X", true, "<6>", &["<gone>"]),
            // A loop in References is not followed.
            (7, 5, "L", false, "<7>", &["<7>"]),
        ];
        assert_eq!(render(&cases, true), "(7)(1 (2 3)(4))((5)(6))");
    }

    #[test]
    fn references_merges_threads_of_one_subject() {
        // RFC 5256 §2.2 (5): a reply without References joins the thread of its subject.
        let cases: [Case<'_>; 3] = [
            (1, 10, "HELLO", false, "<1>", &[]),
            (2, 20, "HELLO", true, "<2>", &[]),
            (3, 30, "OTHER", false, "<3>", &[]),
        ];
        assert_eq!(render(&cases, true), "(1 2)(3)");
        // Two originals with one subject: siblings under a dummy.
        let cases: [Case<'_>; 2] = [
            (1, 10, "HELLO", false, "<1>", &[]),
            (2, 20, "HELLO", false, "<2>", &[]),
        ];
        assert_eq!(render(&cases, true), "((1)(2))");
    }
}
