//! Destinations that refused our mail as spam, or for its rate (Gmail's `421 4.7.28`, a
//! `550 5.7.1` naming spam): mail to them is held back for a while, longer at each new
//! refusal, so a forwarder that relays a burst of spam does not keep hammering the
//! receiver and ruin its address's reputation for good. A delivery that gets through
//! clears the domain.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::proto::client::ServerReply;

/// The first hold; each refusal in a row doubles it, up to [`MAX_HOLD`].
const FIRST_HOLD: Duration = Duration::from_secs(15 * 60);
const MAX_HOLD: Duration = Duration::from_secs(4 * 3600);
/// Domains remembered at most (a flood of distinct ones cannot grow memory).
const MAX_DOMAINS: usize = 10_000;

/// Words of replies that refuse mail as spam or for the sender's reputation.
const SPAM_WORDS: &[&str] = &[
    "spam",
    "unsolicited",
    "junk",
    "blocklist",
    "block list",
    "blacklist",
    "blocked using",
    "reputation",
];

/// Whether a server's reply refuses our mail as spam or for its rate: RFC 3463's X.7.28
/// ("mail flood detected", RFC 7372 §3.3, what Gmail's 421 4.7.28 says), or a policy
/// refusal (X.7.1, X.7.0) whose text speaks of spam or reputation.
pub fn refuses_as_spam(reply: &ServerReply) -> bool {
    let Some(status) = &reply.enhanced else {
        return false;
    };
    if status.subject != 7 || reply.is_positive() {
        return false;
    }
    if status.detail == 28 {
        return true;
    }
    let text = reply.lines.join(" ").to_ascii_lowercase();
    matches!(status.detail, 0 | 1) && SPAM_WORDS.iter().any(|w| text.contains(w))
}

#[derive(Debug, Clone, Copy)]
struct Hold {
    until: Instant,
    /// Refusals in a row.
    strikes: u32,
}

#[derive(Debug, Default)]
pub struct SpamThrottle {
    holds: Mutex<HashMap<String, Hold>>,
}

impl SpamThrottle {
    /// `domain` refused our mail as spam now: holds it, and returns for how long.
    pub fn refused(&self, domain: &str) -> Duration {
        self.refused_at(domain, Instant::now())
    }

    fn refused_at(&self, domain: &str, now: Instant) -> Duration {
        let mut holds = self.lock();
        if holds.len() >= MAX_DOMAINS && !holds.contains_key(domain) {
            holds.retain(|_, h| h.until > now);
        }
        let strikes = holds.get(domain).map_or(0, |h| h.strikes) + 1;
        let hold = FIRST_HOLD
            .saturating_mul(1 << (strikes - 1).min(8))
            .min(MAX_HOLD);
        if holds.len() < MAX_DOMAINS || holds.contains_key(domain) {
            holds.insert(
                domain.to_ascii_lowercase(),
                Hold {
                    until: now + hold,
                    strikes,
                },
            );
        }
        hold
    }

    /// A delivery to `domain` got through: it takes our mail again.
    pub fn accepted(&self, domain: &str) {
        self.lock().remove(&domain.to_ascii_lowercase());
    }

    /// How much longer mail to `domain` waits, if it is held.
    pub fn held_for(&self, domain: &str) -> Option<Duration> {
        self.held_for_at(domain, Instant::now())
    }

    fn held_for_at(&self, domain: &str, now: Instant) -> Option<Duration> {
        let holds = self.lock();
        let hold = holds.get(&domain.to_ascii_lowercase())?;
        (hold.until > now).then(|| hold.until - now)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Hold>> {
        self.holds.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::client::EnhancedStatus;

    fn reply(code: u16, status: Option<(u8, u16, u16)>, text: &str) -> ServerReply {
        ServerReply {
            code,
            enhanced: status.map(|(class, subject, detail)| EnhancedStatus {
                class,
                subject,
                detail,
            }),
            lines: vec![text.to_string()],
        }
    }

    #[test]
    fn spam_refusals_recognised() {
        let cases = [
            // Gmail's, verbatim in spirit.
            (
                421,
                Some((4, 7, 28)),
                "4.7.28 Our system has detected an unusual rate of unsolicited mail originating from your IP address.",
                true,
            ),
            (
                550,
                Some((5, 7, 1)),
                "5.7.1 Our system has detected that this message is likely unsolicited mail.",
                true,
            ),
            (
                550,
                Some((5, 7, 1)),
                "5.7.1 Service unavailable, Client host [192.0.2.1] blocked using Spamhaus.",
                true,
            ),
            (
                554,
                Some((5, 7, 1)),
                "5.7.1 Message rejected due to poor sender reputation",
                true,
            ),
            (550, Some((5, 7, 1)), "5.7.1 Relaying denied", false),
            (
                550,
                Some((5, 1, 1)),
                "5.1.1 The email account that you tried to reach does not exist (spam folder full)",
                false,
            ),
            (421, None, "Too much spam from you", false),
            (
                451,
                Some((4, 7, 1)),
                "4.7.1 Greylisted, try again later",
                false,
            ),
            (
                550,
                Some((5, 7, 26)),
                "5.7.26 Unauthenticated email is not accepted",
                false,
            ),
        ];
        for (code, status, text, want) in cases {
            assert_eq!(
                refuses_as_spam(&reply(code, status, text)),
                want,
                "{code} {text}"
            );
        }
    }

    #[test]
    fn holds_grow_with_each_refusal_and_end_on_success() {
        let t = SpamThrottle::default();
        let now = Instant::now();
        assert_eq!(t.held_for_at("gmail.com", now), None);
        assert_eq!(t.refused_at("Gmail.com", now), FIRST_HOLD);
        assert_eq!(t.held_for_at("gmail.com", now), Some(FIRST_HOLD));
        assert_eq!(t.held_for_at("outlook.com", now), None);
        assert_eq!(t.refused_at("gmail.com", now), 2 * FIRST_HOLD);
        assert_eq!(t.refused_at("gmail.com", now), 4 * FIRST_HOLD);
        for _ in 0..20 {
            t.refused_at("gmail.com", now);
        }
        assert_eq!(t.held_for_at("gmail.com", now), Some(MAX_HOLD));
        assert_eq!(t.held_for_at("gmail.com", now + MAX_HOLD), None, "over");
        t.accepted("GMAIL.com");
        assert_eq!(
            t.refused_at("gmail.com", now),
            FIRST_HOLD,
            "strikes start over"
        );
    }
}
