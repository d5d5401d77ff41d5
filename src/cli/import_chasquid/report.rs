//! What the import did, item by item, for the person reading the terminal: what was converted
//! or copied, and what was not, with the reason.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Translated into tambo's format.
    Converted,
    /// Taken over byte for byte.
    Copied,
    /// Left behind; the detail says why and what to do.
    NotConverted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub outcome: Outcome,
    /// The chasquid thing, relative to the chasquid folder (`chasquid.conf: hostname`).
    pub what: String,
    pub detail: String,
}

#[derive(Debug, Default)]
pub struct Report {
    pub notes: Vec<Note>,
}

impl Report {
    pub fn converted(&mut self, what: impl Into<String>, detail: impl Into<String>) {
        self.push(Outcome::Converted, what.into(), detail.into());
    }
    pub fn copied(&mut self, what: impl Into<String>, detail: impl Into<String>) {
        self.push(Outcome::Copied, what.into(), detail.into());
    }
    pub fn not_converted(&mut self, what: impl Into<String>, why: impl Into<String>) {
        self.push(Outcome::NotConverted, what.into(), why.into());
    }
    fn push(&mut self, outcome: Outcome, what: String, detail: String) {
        self.notes.push(Note {
            outcome,
            what,
            detail,
        });
    }
    pub fn count(&self, outcome: Outcome) -> usize {
        self.notes.iter().filter(|n| n.outcome == outcome).count()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Converted => "converted",
            Outcome::Copied => "copied",
            Outcome::NotConverted => "not converted",
        })
    }
}

impl fmt::Display for Note {
    /// `converted: chasquid.conf: hostname -> "hostname": "mx.example.org"`, one line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.detail.is_empty() {
            write!(f, "{}: {}", self.outcome, self.what)
        } else {
            write!(f, "{}: {}: {}", self.outcome, self.what, self.detail)
        }
    }
}

impl fmt::Display for Report {
    /// Converted and copied first, then what was left behind, then the counts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let order = [Outcome::Converted, Outcome::Copied, Outcome::NotConverted];
        for outcome in order {
            for note in self.notes.iter().filter(|n| n.outcome == outcome) {
                writeln!(f, "{note}")?;
            }
        }
        writeln!(
            f,
            "{} converted, {} copied, {} not converted",
            self.count(Outcome::Converted),
            self.count(Outcome::Copied),
            self.count(Outcome::NotConverted)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_in_groups_with_counts() {
        let mut r = Report::default();
        r.not_converted("chasquid.conf: dovecot_auth", "no Dovecot");
        r.copied("domains/a.example/aliases", "");
        r.converted("chasquid.conf: hostname", "-> \"hostname\": \"mx\"");
        assert_eq!(
            r.to_string(),
            "converted: chasquid.conf: hostname: -> \"hostname\": \"mx\"\n\
             copied: domains/a.example/aliases\n\
             not converted: chasquid.conf: dovecot_auth: no Dovecot\n\
             1 converted, 1 copied, 1 not converted\n"
        );
    }
}
