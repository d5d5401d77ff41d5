//! Maildir file names (maildir(5), Dovecot's maildir-filename.c): the base name that stays
//! when flags change, the `,S=` / `,W=` size fields, the order new files get UIDs in, and
//! fresh unique names.

use std::cmp::Ordering;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// The name without its info part: everything before the first `:`. Files are matched on
/// it, since a flag change renames the file (`...:2,S` to `...:2,RS`).
pub fn base(name: &str) -> &str {
    name.split_once(':').map_or(name, |(b, _)| b)
}

/// The value of a `,<key>=<digits>` field (`S` is the size on disk, `W` the size with CRLF
/// line ends), ended by `,`, `:` or the end of the name.
pub fn size_field(name: &str, key: u8) -> Option<u64> {
    let base = base(name);
    let pattern = [b',', key, b'='];
    let at = base.as_bytes().windows(3).position(|w| w == pattern)?;
    let rest = &base[at + 3..];
    let end = rest.find(',').unwrap_or(rest.len());
    let digits = &rest[..end];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The order in which new files get their UIDs (Dovecot's `maildir_filename_sort_cmp`): by
/// the leading seconds, then by the microseconds of an `M<usecs>` part, then by base name.
/// Unlike Dovecot's, a total order (sorts may rely on it): within a second, names without
/// microseconds come first.
pub fn sort_cmp(a: &str, b: &str) -> Ordering {
    let (secs_a, rest_a) = leading_number(a);
    let (secs_b, rest_b) = leading_number(b);
    secs_a
        .cmp(&secs_b)
        .then_with(|| usecs(rest_a).cmp(&usecs(rest_b)))
        .then_with(|| base(rest_a).cmp(base(rest_b)))
}

/// What [`sort_cmp`] orders by first, (seconds, microseconds): computed once per name when
/// many are sorted; names with equal keys are ordered by [`sort_cmp`].
pub fn sort_key(name: &str) -> (u64, Option<u64>) {
    let (secs, rest) = leading_number(name);
    (secs, usecs(rest))
}

/// The seconds a name starts with (maildir(5): when it was delivered); 0 when none.
pub fn leading_seconds(name: &str) -> i64 {
    i64::try_from(leading_number(name).0).unwrap_or(0)
}

fn leading_number(s: &str) -> (u64, &str) {
    let end = s
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    let n = s[..end].bytes().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    });
    (n, &s[end..])
}

/// The `M<usecs>` inside the unique part (`.M123P45.host` after the seconds).
fn usecs(rest: &str) -> Option<u64> {
    let unique = rest.strip_prefix('.')?;
    let unique = &unique[..unique.find(['.', ':']).unwrap_or(unique.len())];
    let at = unique.find('M')?;
    Some(leading_number(&unique[at + 1..]).0)
}

/// A fresh unique name `<secs>.M<usecs>P<pid>.<host>` (maildir(5), as Dovecot writes them).
/// As in Dovecot, the time never repeats within the process (a name made in the same
/// microsecond as the last one takes the next microsecond), so names are unique and sort
/// in creation order with [`sort_cmp`].
pub fn unique(hostname: &str) -> String {
    static LAST: Mutex<(u64, u32)> = Mutex::new((0, 0));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let mut t = (now.as_secs(), now.subsec_micros());
    if t <= *last {
        t = match last.1 + 1 {
            1_000_000 => (last.0 + 1, 0),
            us => (last.0, us),
        };
    }
    *last = t;
    drop(last);
    format!(
        "{}.M{}P{}.{}",
        t.0,
        t.1,
        std::process::id(),
        safe_hostname(hostname)
    )
}

/// maildir(5): `/` and `:` in the host name are written as `\057` and `\072` (`:` starts the
/// info part of a name in `cur/`); `,` would start a field, so it becomes `\054`.
pub fn safe_hostname(hostname: &str) -> String {
    if hostname.is_empty() {
        return "localhost".to_string();
    }
    hostname
        .chars()
        .map(|c| match c {
            '/' => "\\057".to_string(),
            ':' => "\\072".to_string(),
            ',' => "\\054".to_string(),
            c if c.is_control() => "_".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// The machine's host name, for dotlock contents (Dovecot compares it with its own).
pub fn system_hostname() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname NUL-terminates or fails.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if rc != 0 {
            return "localhost".to_string();
        }
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_names() {
        let cases = [
            ("1.M2P3.host,S=10,W=12:2,RS", "1.M2P3.host,S=10,W=12"),
            ("1.M2P3.host,S=10", "1.M2P3.host,S=10"),
            ("1.host:2,", "1.host"),
            ("1.host:1,x:y", "1.host"),
        ];
        for (name, want) in cases {
            assert_eq!(base(name), want);
        }
    }

    #[test]
    fn sizes() {
        let cases: [(&str, u8, Option<u64>); 9] = [
            ("1.M2P3.host,S=10,W=12:2,S", b'S', Some(10)),
            ("1.M2P3.host,S=10,W=12:2,S", b'W', Some(12)),
            ("1.M2P3.host,W=12,S=10", b'S', Some(10)),
            ("1.M2P3.host,S=10", b'W', None),
            ("1.M2P3.host,S=", b'S', None),
            ("1.M2P3.host,S=1x", b'S', None),
            ("1.M2P3.host:2,,S=5", b'S', None), // after the info: not a field
            ("1.host,S=99999999999999999999999", b'S', None),
            ("1,S=0", b'S', Some(0)),
        ];
        for (name, key, want) in cases {
            assert_eq!(size_field(name, key), want, "{name} {}", key as char);
        }
    }

    #[test]
    fn uid_order() {
        let mut names = vec![
            "1700000001.M5P1.h",
            "1700000000.M20P1.h",
            "1700000000.M3P1.h:2,S",
            "999.x.h",
            "1700000000.M3P0.h",
            "1700000000.Q1.h",
        ];
        names.sort_by(|a, b| sort_cmp(a, b));
        assert_eq!(
            names,
            [
                "999.x.h",
                "1700000000.Q1.h",   // no microseconds: first in its second
                "1700000000.M3P0.h", // same microseconds: base names decide
                "1700000000.M3P1.h:2,S",
                "1700000000.M20P1.h",
                "1700000001.M5P1.h",
            ]
        );
        let names: Vec<String> = (0..1000).map(|_| unique("host")).collect();
        for pair in names.windows(2) {
            assert_eq!(sort_cmp(&pair[0], &pair[1]), Ordering::Less, "{pair:?}");
        }
    }

    #[test]
    fn hostnames() {
        let cases = [
            ("mx.example.org", "mx.example.org"),
            ("a/b:c,d", "a\\057b\\072c\\054d"),
            ("", "localhost"),
            ("a\nb", "a_b"),
        ];
        for (host, want) in cases {
            assert_eq!(safe_hostname(host), want, "{host:?}");
        }
        assert!(!system_hostname().is_empty());
    }
}
