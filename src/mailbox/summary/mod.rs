//! PLACEHOLDER, replaced by the real module (ENVELOPE, BODYSTRUCTURE, sections, SEARCH).
//! Only the interface the store needs: [`Summary`], [`summarize`], [`crlf_size`].

/// ENVELOPE, BODY and BODYSTRUCTURE, encoded as IMAP (RFC 3501 §7.4.2), ready to write after
/// `ENVELOPE ` etc.
pub struct Summary {
    pub envelope: Vec<u8>,
    pub body: Vec<u8>,
    pub bodystructure: Vec<u8>,
}

/// Placeholder: empty fields (the store treats an empty summary as none and asks again).
pub fn summarize(_message: &[u8]) -> Summary {
    Summary {
        envelope: Vec::new(),
        body: Vec::new(),
        bodystructure: Vec::new(),
    }
}

/// The size of the message as IMAP sends it: every LF not preceded by a CR becomes CRLF.
pub fn crlf_size(message: &[u8]) -> u64 {
    let mut size = message.len() as u64;
    let mut prev = 0u8;
    for &b in message {
        if b == b'\n' && prev != b'\r' {
            size += 1;
        }
        prev = b;
    }
    size
}
