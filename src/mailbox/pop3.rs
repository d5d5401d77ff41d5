//! What `dovecot-uidlist` says about a folder's messages for POP3: the UIDL a message
//! had under another server (`P`) and its place in the POP3 listing (`O`), which Dovecot
//! writes when a maildrop is migrated to it, so that POP3 clients download nothing twice.

use crate::mailbox::folder::Folder;
use crate::mailbox::{StoreError, uidfile};
use std::collections::HashMap;

/// The POP3 fields of one uidlist record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pop3Fields {
    /// `P<uidl>`: the UIDL to give instead of the default one.
    pub uidl: Option<String>,
    /// `O<n>`: the message's place in the listing (lowest first, before those without).
    pub order: Option<u32>,
}

impl Folder {
    /// The POP3 fields of the messages that have any, by UID, as the uidlist holds them now.
    pub fn pop3_fields(&self) -> Result<HashMap<u32, Pop3Fields>, StoreError> {
        let Some(loaded) = uidfile::read(&self.dir)? else {
            return Ok(HashMap::new());
        };
        Ok(loaded
            .list
            .records
            .iter()
            .filter_map(|r| Some((r.uid, parse_fields(&r.fields)?)))
            .collect())
    }
}

/// The `P` and `O` fields among a record's fields (`"W1234 P1a2b O3"`); `None` without
/// either.
fn parse_fields(fields: &str) -> Option<Pop3Fields> {
    let mut found = Pop3Fields::default();
    for field in fields.split(' ') {
        if let Some(uidl) = field.strip_prefix('P').filter(|v| !v.is_empty()) {
            found.uidl = Some(uidl.to_string());
        } else if let Some(order) = field.strip_prefix('O') {
            found.order = order.parse().ok();
        }
    }
    (found != Pop3Fields::default()).then_some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        let p = |uidl: Option<&str>, order: Option<u32>| {
            Some(Pop3Fields {
                uidl: uidl.map(str::to_string),
                order,
            })
        };
        let cases: &[(&str, Option<Pop3Fields>)] = &[
            ("", None),
            ("W1234 S1200", None),
            ("W1234 Pold-uidl-42", p(Some("old-uidl-42"), None)),
            ("O7 W12", p(None, Some(7))),
            ("P00000001abcdef01 O2", p(Some("00000001abcdef01"), Some(2))),
            ("P Ox", None),
        ];
        for (fields, want) in cases {
            assert_eq!(parse_fields(fields), *want, "{fields:?}");
        }
    }
}
