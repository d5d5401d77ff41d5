//! Sequence sets (RFC 3501 §9 `sequence-set`) to indexes of the open folder's messages.

use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

/// The indexes (sequence number − 1), ascending and without repeats, that `set` names in a
/// folder of `len` messages whose UIDs `uid_of` gives (ascending with the index).
///
/// Message numbers: `*` is the last message; a number past the last names nothing (the
/// caller answers BAD for those, RFC 3501 §6.4.8 asks it of message numbers). UIDs (RFC 3501
/// §6.4.8): `*` is the highest UID, a range names the UIDs that exist in it, in either order,
/// and `n:*` always names the last message, even when `n` is past it.
pub fn indexes(
    set: &SequenceSet,
    len: usize,
    uid: bool,
    uid_of: impl Fn(usize) -> u32,
) -> Vec<usize> {
    let mut out = Vec::new();
    if len == 0 {
        return out;
    }
    let last_uid = uid_of(len - 1);
    for seq in set.0.as_ref() {
        let (a, b) = match seq {
            Sequence::Single(x) => (*x, *x),
            Sequence::Range(a, b) => (*a, *b),
        };
        if uid {
            let value = |x: SeqOrUid| match x {
                SeqOrUid::Value(v) => v.get(),
                SeqOrUid::Asterisk => last_uid,
            };
            let (lo, hi) = order(value(a), value(b));
            let start = first_at_least(len, &uid_of, lo);
            out.extend((start..len).take_while(|&i| uid_of(i) <= hi));
            if matches!(a, SeqOrUid::Asterisk) || matches!(b, SeqOrUid::Asterisk) {
                out.push(len - 1);
            }
        } else {
            let value = |x: SeqOrUid| match x {
                SeqOrUid::Value(v) => v.get() as usize,
                SeqOrUid::Asterisk => len,
            };
            let (lo, hi) = order(value(a), value(b));
            let hi = hi.min(len);
            if lo <= hi {
                out.extend(lo - 1..hi);
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Whether a message-number set names a message past the last one (RFC 3501 §6.4.8: BAD).
pub fn out_of_range(set: &SequenceSet, len: usize) -> bool {
    set.0.as_ref().iter().any(|seq| {
        let beyond = |x: &SeqOrUid| matches!(x, SeqOrUid::Value(v) if v.get() as usize > len);
        match seq {
            Sequence::Single(x) => beyond(x) || (len == 0 && matches!(x, SeqOrUid::Asterisk)),
            Sequence::Range(a, b) => (beyond(a) && beyond(b)) || (len == 0),
        }
    })
}

/// Whether `value` (a message number or a UID) is in `set`, `*` being `last` (the last
/// message number, or the highest UID). For SEARCH, which asks it of every message.
pub fn contains(set: &SequenceSet, value: u32, last: u32) -> bool {
    let v = |x: &SeqOrUid| match x {
        SeqOrUid::Value(n) => n.get(),
        SeqOrUid::Asterisk => last,
    };
    set.0.as_ref().iter().any(|seq| match seq {
        Sequence::Single(x) => v(x) == value,
        Sequence::Range(a, b) => {
            let (lo, hi) = order(v(a), v(b));
            (lo..=hi).contains(&value)
        }
    })
}

/// The ranges `set` names, `*` being `last`: ascending, merged (for sets of UIDs that need
/// not exist, as QRESYNC's known UIDs).
pub fn ranges(set: &SequenceSet, last: u32) -> Vec<(u32, u32)> {
    let v = |x: &SeqOrUid| match x {
        SeqOrUid::Value(n) => n.get(),
        SeqOrUid::Asterisk => last,
    };
    let mut out: Vec<(u32, u32)> = set
        .0
        .as_ref()
        .iter()
        .map(|seq| match seq {
            Sequence::Single(x) => (v(x), v(x)),
            Sequence::Range(a, b) => order(v(a), v(b)),
        })
        .collect();
    merge(&mut out);
    out
}

/// Ascending values as merged ranges.
pub fn ranges_of(values: &[u32]) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = values.iter().map(|&v| (v, v)).collect();
    merge(&mut out);
    out
}

fn merge(ranges: &mut Vec<(u32, u32)>) {
    ranges.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
    for &(a, b) in ranges.iter() {
        match merged.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    *ranges = merged;
}

/// `1:3,5` (RFC 3501 §9 `sequence-set`); empty for no ranges.
pub fn format(ranges: &[(u32, u32)]) -> String {
    let parts: Vec<String> = ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}:{b}")
            }
        })
        .collect();
    parts.join(",")
}

fn order<T: Ord>(a: T, b: T) -> (T, T) {
    if a <= b { (a, b) } else { (b, a) }
}

/// The first index whose UID is at least `uid` (binary search: UIDs ascend).
fn first_at_least(len: usize, uid_of: &impl Fn(usize) -> u32, uid: u32) -> usize {
    let (mut lo, mut hi) = (0, len);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if uid_of(mid) < uid {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &str) -> SequenceSet {
        SequenceSet::try_from(s).unwrap()
    }

    #[test]
    fn message_numbers_and_uids() {
        // Five messages with UIDs 2, 4, 6, 8, 10.
        let uid_of = |i: usize| (i as u32 + 1) * 2;
        let cases: [(&str, bool, &[usize]); 12] = [
            ("1", false, &[0]),
            ("2:4", false, &[1, 2, 3]),
            ("4:2", false, &[1, 2, 3]),
            ("*", false, &[4]),
            ("3:*", false, &[2, 3, 4]),
            ("1,3,1:2", false, &[0, 1, 2]),
            ("9", false, &[]),
            ("4", true, &[1]),
            ("3:7", true, &[1, 2]),
            ("7:3", true, &[1, 2]),
            ("100:*", true, &[4]),
            ("1:*", true, &[0, 1, 2, 3, 4]),
        ];
        for (s, uid, want) in cases {
            assert_eq!(indexes(&set(s), 5, uid, uid_of), want, "{s} uid={uid}");
        }
        assert!(indexes(&set("1:*"), 0, true, uid_of).is_empty());
        assert!(out_of_range(&set("6"), 5));
        assert!(!out_of_range(&set("5"), 5));
        assert!(!out_of_range(&set("3:9"), 5));
    }

    #[test]
    fn ranges_merge_and_print() {
        assert_eq!(ranges(&set("5,1:3,4,9:*"), 10), [(1, 5), (9, 10)]);
        assert_eq!(ranges(&set("*:7"), 3), [(3, 7)]);
        assert_eq!(format(&ranges_of(&[1, 2, 3, 5, 7, 8])), "1:3,5,7:8");
        assert_eq!(format(&[]), "");
    }
}
