//! What a mail client is told about our servers: Thunderbird's autoconfiguration file
//! (clientConfig 1.1, as Thunderbird's wiki "Autoconfiguration/ConfigFileFormat" documents)
//! and Outlook's autodiscover answer (the POX "outlook/responseschema/2006a" schema). Pure
//! functions of the enabled ports, the host name and the domain.

use crate::config::Settings;
use std::fmt::Write as _;
use std::net::SocketAddr;

/// The enabled client ports, by the port of the first listener of each kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailPorts {
    pub imaps: Option<u16>,
    pub imap: Option<u16>,
    pub pop3s: Option<u16>,
    pub pop3: Option<u16>,
    /// Submission over implicit TLS (RFC 8314 §3.3).
    pub submissions: Option<u16>,
    /// Submission with STARTTLS (RFC 6409).
    pub submission: Option<u16>,
}

impl MailPorts {
    pub fn from_settings(settings: &Settings) -> MailPorts {
        let first = |v: &[SocketAddr]| v.first().map(SocketAddr::port);
        MailPorts {
            imaps: first(&settings.imaps_listen),
            imap: first(&settings.imap_listen),
            pop3s: first(&settings.pop3s_listen),
            pop3: first(&settings.pop3_listen),
            submissions: first(&settings.submission_tls_listen),
            submission: first(&settings.submission_listen),
        }
    }

    /// (protocol, port, implicit TLS), the preferred first: RFC 8314 §3 prefers implicit TLS.
    fn incoming(&self) -> Vec<(&'static str, u16, bool)> {
        let all = [
            ("imap", self.imaps, true),
            ("imap", self.imap, false),
            ("pop3", self.pop3s, true),
            ("pop3", self.pop3, false),
        ];
        all.into_iter()
            .filter_map(|(kind, port, tls)| Some((kind, port?, tls)))
            .collect()
    }

    fn outgoing(&self) -> Vec<(u16, bool)> {
        [(self.submissions, true), (self.submission, false)]
            .into_iter()
            .filter_map(|(port, tls)| Some((port?, tls)))
            .collect()
    }
}

/// XML character data / attribute value.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
    out
}

/// Thunderbird's `config-v1.1.xml` for `domain`, served by us at `hostname`.
pub fn thunderbird(domain: &str, hostname: &str, ports: &MailPorts) -> String {
    let (d, h) = (escape(domain), escape(hostname));
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(x, "<clientConfig version=\"1.1\">");
    let _ = writeln!(x, "  <emailProvider id=\"{d}\">");
    let _ = writeln!(x, "    <domain>{d}</domain>");
    let _ = writeln!(x, "    <displayName>{d}</displayName>");
    let _ = writeln!(x, "    <displayShortName>{d}</displayShortName>");
    for (kind, port, tls) in ports.incoming() {
        server(
            &mut x,
            &format!("incomingServer type=\"{kind}\""),
            &h,
            port,
            tls,
        );
    }
    for (port, tls) in ports.outgoing() {
        server(&mut x, "outgoingServer type=\"smtp\"", &h, port, tls);
    }
    let _ = writeln!(x, "  </emailProvider>");
    let _ = writeln!(x, "</clientConfig>");
    x
}

fn server(x: &mut String, open: &str, host: &str, port: u16, tls: bool) {
    let close = open.split(' ').next().unwrap_or(open);
    let socket = if tls { "SSL" } else { "STARTTLS" };
    let _ = writeln!(x, "    <{open}>");
    let _ = writeln!(x, "      <hostname>{host}</hostname>");
    let _ = writeln!(x, "      <port>{port}</port>");
    let _ = writeln!(x, "      <socketType>{socket}</socketType>");
    // Our logins are whole addresses (SPEC §5); PLAIN/LOGIN only, inside TLS.
    let _ = writeln!(x, "      <username>%EMAILADDRESS%</username>");
    let _ = writeln!(
        x,
        "      <authentication>password-cleartext</authentication>"
    );
    let _ = writeln!(x, "    </{close}>");
}

/// The `<EMailAddress>` of an autodiscover request body, when it is a valid address.
pub fn requested_address(body: &str) -> Option<String> {
    let (_, rest) = body.split_once("<EMailAddress>")?;
    let (address, _) = rest.split_once("</EMailAddress>")?;
    let address = crate::addr::Address::parse(address.trim()).ok()?;
    Some(address.to_string())
}

/// Outlook's autodiscover answer (POX, "outlook/responseschema/2006a"): one `<Protocol>` per
/// enabled port; `<SSL>on` is implicit TLS, `<Encryption>TLS` is STARTTLS.
pub fn autodiscover(hostname: &str, login: Option<&str>, ports: &MailPorts) -> String {
    let h = escape(hostname);
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    x.push_str("<Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006\">\n");
    x.push_str("  <Response xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a\">\n");
    x.push_str(
        "    <Account>\n      <AccountType>email</AccountType>\n      <Action>settings</Action>\n",
    );
    let incoming = ports
        .incoming()
        .into_iter()
        .map(|(k, p, t)| (k.to_ascii_uppercase(), p, t));
    let outgoing = ports
        .outgoing()
        .into_iter()
        .map(|(p, t)| ("SMTP".to_string(), p, t));
    for (kind, port, tls) in incoming.chain(outgoing) {
        let _ = writeln!(x, "      <Protocol>");
        let _ = writeln!(x, "        <Type>{kind}</Type>");
        let _ = writeln!(x, "        <Server>{h}</Server>");
        let _ = writeln!(x, "        <Port>{port}</Port>");
        if let Some(login) = login {
            let _ = writeln!(x, "        <LoginName>{}</LoginName>", escape(login));
        }
        let _ = writeln!(x, "        <DomainRequired>off</DomainRequired>");
        let _ = writeln!(x, "        <SPA>off</SPA>");
        if tls {
            let _ = writeln!(x, "        <SSL>on</SSL>");
        } else {
            let _ = writeln!(x, "        <SSL>off</SSL>");
            let _ = writeln!(x, "        <Encryption>TLS</Encryption>");
        }
        let _ = writeln!(x, "        <AuthRequired>on</AuthRequired>");
        let _ = writeln!(x, "      </Protocol>");
    }
    x.push_str("    </Account>\n  </Response>\n</Autodiscover>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports() -> MailPorts {
        MailPorts {
            imaps: Some(993),
            imap: None,
            pop3s: None,
            pop3: Some(110),
            submissions: Some(465),
            submission: Some(587),
        }
    }

    #[test]
    fn thunderbird_lists_each_enabled_port_once() {
        let x = thunderbird("example.com", "mail.example.com", &ports());
        assert!(x.contains("<clientConfig version=\"1.1\">"), "{x}");
        assert_eq!(
            x.matches("<incomingServer type=\"imap\">").count(),
            1,
            "{x}"
        );
        assert_eq!(
            x.matches("<incomingServer type=\"pop3\">").count(),
            1,
            "{x}"
        );
        assert_eq!(
            x.matches("<outgoingServer type=\"smtp\">").count(),
            2,
            "{x}"
        );
        assert!(
            x.contains("<port>993</port>\n      <socketType>SSL</socketType>"),
            "{x}"
        );
        assert!(
            x.contains("<port>587</port>\n      <socketType>STARTTLS</socketType>"),
            "{x}"
        );
        assert!(!x.contains("143"), "{x}");
    }

    #[test]
    fn autodiscover_names_the_login_escaped() {
        let body = "<Autodiscover><Request><EMailAddress>a@example.com</EMailAddress></Request></Autodiscover>";
        assert_eq!(requested_address(body).as_deref(), Some("a@example.com"));
        assert_eq!(
            requested_address("<EMailAddress>not an address</EMailAddress>"),
            None
        );
        let x = autodiscover("mail.example.com", Some("a&b@example.com"), &ports());
        assert!(
            x.contains("<LoginName>a&amp;b@example.com</LoginName>"),
            "{x}"
        );
        assert_eq!(x.matches("<Type>SMTP</Type>").count(), 2, "{x}");
        assert!(x.contains("<Type>IMAP</Type>"), "{x}");
    }
}
