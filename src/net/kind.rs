//! What a listener serves: a protocol, and how its connections start.

use crate::config::Settings;
use std::net::SocketAddr;

/// What a listener serves: a protocol, and how its connections start (in the clear, or TLS
/// at once). The names are those of the `<name>_listen` settings, of the systemd sockets
/// (`FileDescriptorName=`) and of the metrics' `listener` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerKind {
    /// SMTP on port 25: mail for local domains (MX), no AUTH.
    Smtp,
    /// Submission on 587: STARTTLS, then AUTH.
    Submission,
    /// Submission on 465: implicit TLS, then AUTH.
    SubmissionTls,
    /// IMAP on 143: STARTTLS before LOGIN.
    Imap,
    /// IMAP on 993: implicit TLS.
    Imaps,
    /// POP3 on 110: STLS before USER/PASS.
    Pop3,
    /// POP3 on 995: implicit TLS.
    Pop3s,
}

/// The protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Smtp,
    Imap,
    Pop3,
}

impl Protocol {
    /// The name logs and metrics use.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Smtp => "smtp",
            Protocol::Imap => "imap",
            Protocol::Pop3 => "pop3",
        }
    }
}

impl ListenerKind {
    pub const ALL: [ListenerKind; 7] = [
        ListenerKind::Smtp,
        ListenerKind::Submission,
        ListenerKind::SubmissionTls,
        ListenerKind::Imap,
        ListenerKind::Imaps,
        ListenerKind::Pop3,
        ListenerKind::Pop3s,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ListenerKind::Smtp => "smtp",
            ListenerKind::Submission => "submission",
            ListenerKind::SubmissionTls => "submission_tls",
            ListenerKind::Imap => "imap",
            ListenerKind::Imaps => "imaps",
            ListenerKind::Pop3 => "pop3",
            ListenerKind::Pop3s => "pop3s",
        }
    }

    /// The kind named `name` (see [`ListenerKind::name`]).
    pub fn from_name(name: &str) -> Option<ListenerKind> {
        ListenerKind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn protocol(self) -> Protocol {
        match self {
            ListenerKind::Smtp | ListenerKind::Submission | ListenerKind::SubmissionTls => {
                Protocol::Smtp
            }
            ListenerKind::Imap | ListenerKind::Imaps => Protocol::Imap,
            ListenerKind::Pop3 | ListenerKind::Pop3s => Protocol::Pop3,
        }
    }

    /// TLS from the first byte (465, 993, 995), rather than in the clear with STARTTLS/STLS.
    pub fn implicit_tls(self) -> bool {
        matches!(
            self,
            ListenerKind::SubmissionTls | ListenerKind::Imaps | ListenerKind::Pop3s
        )
    }

    /// The addresses the settings give this kind.
    pub fn configured(self, settings: &Settings) -> &[SocketAddr] {
        match self {
            ListenerKind::Smtp => &settings.smtp_listen,
            ListenerKind::Submission => &settings.submission_listen,
            ListenerKind::SubmissionTls => &settings.submission_tls_listen,
            ListenerKind::Imap => &settings.imap_listen,
            ListenerKind::Imaps => &settings.imaps_listen,
            ListenerKind::Pop3 => &settings.pop3_listen,
            ListenerKind::Pop3s => &settings.pop3s_listen,
        }
    }
}

impl std::fmt::Display for ListenerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        for kind in ListenerKind::ALL {
            assert_eq!(ListenerKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(ListenerKind::from_name("mx"), None);
    }

    #[test]
    fn every_kind_has_its_metrics_label() {
        for kind in ListenerKind::ALL {
            assert!(crate::metrics::knows_listener(kind.name()), "{kind}");
        }
    }
}
