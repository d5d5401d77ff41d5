//! The envelope of a message: its sender, its recipients one by one with their state, and
//! what tambo learned and added when it took the message.

use crate::aliases::Recipient;
use std::time::SystemTime;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RcptState {
    Pending,
    Delivered,
    Failed { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueuedRcpt {
    /// The address the client gave at RCPT.
    pub original: String,
    pub target: Recipient,
    pub state: RcptState,
    /// Last temporary error, for `util queue` and logs.
    #[serde(default)]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Envelope {
    /// Reverse-path; empty for `<>`.
    pub from: String,
    pub rcpts: Vec<QueuedRcpt>,
    /// Seconds since the epoch.
    pub received_at: u64,
    /// Client address, HELO, auth user: for logs and DSNs.
    pub client: String,
    /// The sender used SMTPUTF8 (RFC 6531): relays must offer it too.
    #[serde(default)]
    pub smtputf8: bool,
    /// The sender declared BODY=8BITMIME (RFC 6152).
    #[serde(default)]
    pub body_8bit: bool,
    /// Submitted by an authenticated user (`user@domain`), not received from another MTA.
    #[serde(default)]
    pub auth_user: Option<String>,
    /// Header lines (each ending in CRLF) that tambo added once the message was read:
    /// Authentication-Results, a post-data hook's output. Couriers see them ahead of the data
    /// through [`StoredMessage::open_data`](crate::message::StoredMessage::open_data).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub headers: String,
    /// The value of the Authentication-Results header we added on port 25 (after the field
    /// name), for the ARC-Authentication-Results of an ARC seal (RFC 8617 §4.1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_results: Option<String>,
    /// Why this message must never leave for an outside address (SPF `fail`, DMARC
    /// `p=reject` failure accepted under `inbound_policy` "tag", SPEC §8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_forward: Option<String>,
    /// Received on port 25 from a sender neither SPF nor an aligned DKIM signature vouched
    /// for: a failure of a forwarded copy is logged, never bounced (SPEC §8, no backscatter). False for mail
    /// queued before this field existed, which bounces as it always did.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unverified_sender: bool,
    /// Its DMARC pass rested on SPF alone, under `p=quarantine` or `p=reject`: a copy
    /// forwarded outside gets a From: of the forwarding domain (SPEC §8,
    /// `forward_from_rewrite`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_rewrite: bool,
}

/// Seconds since the epoch, now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
