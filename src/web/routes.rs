//! Requests → replies of the web endpoints, by host name and path (SPEC §12); pure functions
//! of what the site serves, so every route is a unit test.

use super::autoconfig::{self, MailPorts};
use super::mta_sts;
use crate::challenges::Challenges;
use hyper::Method;

/// What `https_listen` describes; built from the configuration in force at each request.
#[derive(Debug, Clone)]
pub struct Site {
    /// Our host name (A-labels): the MX and the mail servers the clients are sent to.
    pub hostname: String,
    /// Local domains, A-labels, lower case.
    pub domains: Vec<String>,
    pub mta_sts_mode: &'static str,
    pub ports: MailPorts,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Ok {
        content_type: &'static str,
        body: String,
    },
    /// 301 to this URL.
    Redirect(String),
    MethodNotAllowed,
    NotFound,
}

const TEXT: &str = "text/plain; charset=utf-8";
const XML: &str = "application/xml; charset=utf-8";
/// RFC 8555 §8.3: the challenge path prefix.
pub const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// The Host header without its port, lower case, no trailing dot.
pub fn host_name(host: &str) -> String {
    let host = match host.rsplit_once(':') {
        // Not a bare IPv6 literal's colon: `[::1]:443` or `name:443`.
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => {
            name
        }
        _ => host,
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `http_listen`: ACME http-01 answers (RFC 8555 §8.3); anything else goes to https.
pub fn http(challenges: &Challenges, method: &Method, host: &str, path: &str) -> Reply {
    if let Some(token) = path.strip_prefix(ACME_CHALLENGE_PREFIX) {
        if method != Method::GET && method != Method::HEAD {
            return Reply::MethodNotAllowed;
        }
        return match challenges.http(token) {
            Some(key_authorization) => Reply::Ok {
                content_type: "application/octet-stream",
                body: key_authorization,
            },
            None => Reply::NotFound,
        };
    }
    let host = host_name(host);
    if host.is_empty() || !crate::addr::is_host_name(&host) {
        return Reply::NotFound;
    }
    Reply::Redirect(format!("https://{host}{path}"))
}

impl Site {
    /// `https_listen`: the MTA-STS policy, autoconfiguration, autodiscover.
    pub fn https(&self, method: &Method, host: &str, path: &str, query: &str, body: &str) -> Reply {
        let host = host_name(host);
        let get = method == Method::GET || method == Method::HEAD;
        match path {
            // RFC 8461 §3.3: the policy host is `mta-sts.<domain>`.
            "/.well-known/mta-sts.txt" => match self.domain_under(&host, "mta-sts.") {
                Some(_) if get => Reply::Ok {
                    content_type: TEXT,
                    body: mta_sts::policy_text(self.mta_sts_mode, &self.hostname),
                },
                Some(_) => Reply::MethodNotAllowed,
                None => Reply::NotFound,
            },
            "/mail/config-v1.1.xml" | "/.well-known/autoconfig/mail/config-v1.1.xml" => {
                let email_domain = query_param(query, "emailaddress")
                    .map(|a| a.replace("%40", "@"))
                    .and_then(|a| a.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()));
                let domain = self
                    .domain_under(&host, "autoconfig.")
                    .or_else(|| self.domain_under(&host, ""))
                    .or_else(|| email_domain.filter(|d| self.domains.contains(d)));
                match domain {
                    Some(_) if !get => Reply::MethodNotAllowed,
                    Some(d) => Reply::Ok {
                        content_type: XML,
                        body: autoconfig::thunderbird(&d, &self.hostname, &self.ports),
                    },
                    None => Reply::NotFound,
                }
            }
            // Outlook POSTs its request; some clients GET.
            "/autodiscover/autodiscover.xml" | "/Autodiscover/Autodiscover.xml" => {
                if method != Method::POST && !get {
                    return Reply::MethodNotAllowed;
                }
                let login = autoconfig::requested_address(body);
                Reply::Ok {
                    content_type: XML,
                    body: autoconfig::autodiscover(&self.hostname, login.as_deref(), &self.ports),
                }
            }
            _ => Reply::NotFound,
        }
    }

    /// The local domain `d` when `host` is `<prefix><d>`.
    fn domain_under(&self, host: &str, prefix: &str) -> Option<String> {
        let domain = host.strip_prefix(prefix)?;
        self.domains.iter().find(|d| *d == domain).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> Site {
        Site {
            hostname: "mail.example.com".into(),
            domains: vec!["example.com".into()],
            mta_sts_mode: "enforce",
            ports: MailPorts {
                imaps: Some(993),
                submission: Some(587),
                ..Default::default()
            },
        }
    }

    fn body(reply: Reply) -> String {
        match reply {
            Reply::Ok { body, .. } => body,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn https_routes() {
        let s = site();
        let get = &Method::GET;
        let policy = body(s.https(
            get,
            "mta-sts.example.com:443",
            "/.well-known/mta-sts.txt",
            "",
            "",
        ));
        assert!(policy.contains("mx: mail.example.com\r\n"), "{policy}");
        assert_eq!(
            s.https(get, "mta-sts.other.com", "/.well-known/mta-sts.txt", "", ""),
            Reply::NotFound
        );
        assert_eq!(
            s.https(
                &Method::POST,
                "mta-sts.example.com",
                "/.well-known/mta-sts.txt",
                "",
                ""
            ),
            Reply::MethodNotAllowed
        );
        let x = body(s.https(
            get,
            "autoconfig.example.com",
            "/mail/config-v1.1.xml",
            "",
            "",
        ));
        assert!(x.contains("<domain>example.com</domain>"), "{x}");
        let x = body(s.https(
            get,
            "example.com",
            "/.well-known/autoconfig/mail/config-v1.1.xml",
            "",
            "",
        ));
        assert!(x.contains("<domain>example.com</domain>"), "{x}");
        let x = body(s.https(
            get,
            "mail.example.com",
            "/mail/config-v1.1.xml",
            "emailaddress=a%40example.com",
            "",
        ));
        assert!(x.contains("<domain>example.com</domain>"), "{x}");
        assert_eq!(
            s.https(get, "autoconfig.evil.com", "/mail/config-v1.1.xml", "", ""),
            Reply::NotFound
        );
        let x = body(s.https(
            &Method::POST,
            "autodiscover.example.com",
            "/autodiscover/autodiscover.xml",
            "",
            "<EMailAddress>a@example.com</EMailAddress>",
        ));
        assert!(x.contains("<LoginName>a@example.com</LoginName>"), "{x}");
        assert_eq!(s.https(get, "example.com", "/", "", ""), Reply::NotFound);
    }

    #[test]
    fn http_answers_challenges_and_redirects() {
        let c = Challenges::default();
        c.set_http("tok", "tok.thumb");
        let get = &Method::GET;
        assert_eq!(
            http(&c, get, "x", "/.well-known/acme-challenge/tok"),
            Reply::Ok {
                content_type: "application/octet-stream",
                body: "tok.thumb".into()
            }
        );
        assert_eq!(
            http(&c, get, "x", "/.well-known/acme-challenge/other"),
            Reply::NotFound
        );
        assert_eq!(
            http(&c, get, "Mail.Example.com:80", "/a"),
            Reply::Redirect("https://mail.example.com/a".into())
        );
        assert_eq!(http(&c, get, "bad host\r\n", "/a"), Reply::NotFound);
    }

    #[test]
    fn host_names_lose_their_port() {
        for (host, want) in [
            ("a.example:443", "a.example"),
            ("A.Example.", "a.example"),
            ("[::1]:443", "[::1]"),
            ("::1", "::1"),
        ] {
            assert_eq!(host_name(host), want, "{host}");
        }
    }
}
