//! Dates in message headers.

use time::OffsetDateTime;
use time::macros::format_description;

/// `Sun, 22 Nov 2026 21:57:14 +0000` (RFC 5322 §3.3).
pub fn rfc5322_date(t: OffsetDateTime) -> String {
    let fmt = format_description!(
        "[weekday repr:short], [day padding:none] [month repr:short] [year] [hour]:[minute]:[second] [offset_hour sign:mandatory][offset_minute]"
    );
    t.format(&fmt)
        .unwrap_or_else(|_| "Thu, 1 Jan 1970 00:00:00 +0000".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn rfc5322_dates() {
        assert_eq!(
            rfc5322_date(datetime!(2026-11-22 21:57:14 UTC)),
            "Sun, 22 Nov 2026 21:57:14 +0000"
        );
        assert_eq!(
            rfc5322_date(datetime!(2026-01-05 08:03:04 +01:00)),
            "Mon, 5 Jan 2026 08:03:04 +0100"
        );
    }
}
