use super::*;

/// Writes `text` as `conf/tambo.json` of a fresh config folder and loads it.
fn load_text(text: &str) -> (tempfile::TempDir, Result<Settings, ConfigError>) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("conf")).unwrap();
    std::fs::write(tmp.path().join("conf/tambo.json"), text).unwrap();
    let result = Settings::load(tmp.path());
    (tmp, result)
}

fn load_ok(text: &str) -> Settings {
    let (_tmp, result) = load_text(text);
    result.unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn load_err(text: &str) -> String {
    let (tmp, result) = load_text(text);
    let err = result.err().unwrap_or_else(|| panic!("{text}: loaded")).0;
    let file = format!("{}/conf/tambo.json", tmp.path().display());
    err.strip_prefix(&file)
        .unwrap_or_else(|| panic!("{err}"))
        .to_string()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn assert_defaults(s: &Settings, dir: &Path) {
    assert_eq!(s.config_dir, dir);
    assert!(!s.hostname.is_empty());
    assert_eq!(s.hostname, s.hostname.to_lowercase());
    assert_eq!(s.smtp_listen, [sa("0.0.0.0:25"), sa("[::]:25")]);
    assert_eq!(s.submission_listen, [sa("0.0.0.0:587"), sa("[::]:587")]);
    assert_eq!(s.submission_tls_listen, [sa("0.0.0.0:465"), sa("[::]:465")]);
    assert!(s.imap_listen.is_empty() && s.imaps_listen.is_empty());
    assert!(s.pop3_listen.is_empty() && s.pop3s_listen.is_empty());
    assert_eq!(s.monitoring_listen, None);
    assert_eq!(s.data_dir, dir.join("data"));
    assert_eq!(s.max_message_size_mb, 50);
    assert_eq!(s.max_message_size(), 50 * 1024 * 1024);
    assert_eq!(s.max_recipients, 100);
    assert_eq!(s.suffix_separators, "+");
    assert_eq!(s.drop_characters, ".");
    assert_eq!(s.local_delivery, LocalDelivery::Maildir);
    assert_eq!(s.give_up_after, Duration::from_secs(20 * 3600));
    assert!(s.dns_servers.is_empty());
    assert_eq!(s.outbound_smtp_port, 25);
    let reject = PolicyAction::Reject;
    assert_eq!(
        s.inbound_policy,
        InboundPolicy {
            spf_fail: reject,
            dmarc_reject: reject
        }
    );
    assert_eq!(s.srs_secret, None);
    assert!(!s.haproxy_incoming);
    assert!(s.relay_networks.is_empty());
    assert_eq!(s.outbound_bind, None);
    assert!(s.arc_seal);
    assert_eq!(s.mailbox_quota_mb, 0);
    assert_eq!(s.forward_from_rewrite, FromRewrite::Auto);
    assert!(s.dnsbl.is_empty());
    assert_eq!(s.max_connections, 4000);
    assert_eq!(s.max_connections_per_address, 50);
}

#[test]
fn missing_file_is_defaults() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Settings::load(tmp.path()).unwrap();
    assert_defaults(&s, tmp.path());
}

#[test]
fn empty_object_and_empty_file_are_defaults() {
    for text in ["{}", "{\n}\n", "", "  \n"] {
        let (tmp, result) = load_text(text);
        assert_defaults(&result.unwrap(), tmp.path());
    }
}

#[test]
fn relative_config_dir_becomes_absolute() {
    let s = Settings::load(Path::new("no-such-config-folder")).unwrap();
    assert!(s.config_dir.is_absolute());
    assert!(s.data_dir.starts_with(&s.config_dir));
}

#[test]
fn every_key_accepted() {
    let text = r#"{
        "hostname": "Mail.Example.COM",
        "smtp_listen": ["127.0.0.1:2525", "[::1]:2525"],
        "submission_listen": ["127.0.0.1:5870"],
        "submission_tls_listen": [],
        "imap_listen": ["127.0.0.1:1143"],
        "imaps_listen": ["127.0.0.1:1993"],
        "pop3_listen": ["127.0.0.1:1110"],
        "pop3s_listen": ["[::]:1995"],
        "monitoring_listen": "127.0.0.1:9090",
        "data_dir": "/var/lib/tambo",
        "max_message_size_mb": 25,
        "max_recipients": 10,
        "suffix_separators": "+-",
        "drop_characters": "",
        "local_delivery": {"mda": ["maildrop", "-f", "%from%", "-d", "%to_user%"]},
        "give_up_after": "5d",
        "dns_servers": ["127.0.0.1:5353", "::1", "192.0.2.53"],
        "outbound_smtp_port": 2526,
        "inbound_policy": {"spf_fail": "tag"},
        "srs_secret": "s3cret",
        "haproxy_incoming": true,
        "relay_networks": ["192.0.2.0/24", "2001:db8::/32", "10.0.0.1"],
        "outbound_bind": "2001:db8::5",
        "arc_seal": false,
        "mailbox_quota_mb": 1024,
        "forward_from_rewrite": "never",
        "dnsbl": ["zen.spamhaus.org", "BL.Example.NET"],
        "acme": {"email": "admin@example.com", "directory": "https://acme.example/dir"},
        "http_listen": ["0.0.0.0:80"],
        "https_listen": ["0.0.0.0:443", "[::]:443"],
        "max_connections": 300,
        "max_connections_per_address": 7
    }"#;
    let s = load_ok(text);
    assert_eq!(s.hostname, "mail.example.com");
    assert_eq!(s.smtp_listen, [sa("127.0.0.1:2525"), sa("[::1]:2525")]);
    assert_eq!(s.submission_listen, [sa("127.0.0.1:5870")]);
    assert!(s.submission_tls_listen.is_empty());
    assert_eq!(s.imap_listen, [sa("127.0.0.1:1143")]);
    assert_eq!(s.imaps_listen, [sa("127.0.0.1:1993")]);
    assert_eq!(s.pop3_listen, [sa("127.0.0.1:1110")]);
    assert_eq!(s.pop3s_listen, [sa("[::]:1995")]);
    assert_eq!(s.monitoring_listen, Some(sa("127.0.0.1:9090")));
    assert_eq!(
        s.acme,
        Some(Acme {
            email: "admin@example.com".into(),
            directory: "https://acme.example/dir".into()
        })
    );
    assert_eq!(s.http_listen, [sa("0.0.0.0:80")]);
    assert_eq!(s.https_listen, [sa("0.0.0.0:443"), sa("[::]:443")]);
    assert_eq!(s.data_dir, Path::new("/var/lib/tambo"));
    assert_eq!(s.max_message_size(), 25 * 1024 * 1024);
    assert_eq!(s.max_recipients, 10);
    assert_eq!(s.suffix_separators, "+-");
    assert_eq!(s.drop_characters, "");
    let argv = ["maildrop", "-f", "%from%", "-d", "%to_user%"].map(String::from);
    assert_eq!(s.local_delivery, LocalDelivery::Mda(argv.to_vec()));
    assert_eq!(s.give_up_after, Duration::from_secs(5 * 86400));
    assert_eq!(
        s.dns_servers,
        [sa("127.0.0.1:5353"), sa("[::1]:53"), sa("192.0.2.53:53")]
    );
    assert_eq!(s.outbound_smtp_port, 2526);
    assert_eq!(s.inbound_policy.spf_fail, PolicyAction::Tag);
    assert_eq!(s.inbound_policy.dmarc_reject, PolicyAction::Reject);
    assert_eq!(s.srs_secret.as_deref(), Some("s3cret"));
    assert!(s.haproxy_incoming);
    assert_eq!(s.relay_networks.len(), 3);
    assert_eq!(s.relay_networks[2].prefix, 32);
    assert_eq!(s.outbound_bind, Some("2001:db8::5".parse().unwrap()));
    assert!(!s.arc_seal);
    assert_eq!(s.mailbox_quota_mb, 1024);
    assert_eq!(s.forward_from_rewrite, FromRewrite::Never);
    assert_eq!(s.dnsbl, ["zen.spamhaus.org", "bl.example.net"]);
    assert_eq!(s.max_connections, 300);
    assert_eq!(s.max_connections_per_address, 7);
}

#[test]
fn value_variants_accepted() {
    type Check = fn(&Settings) -> bool;
    let cases: &[(&str, Check)] = &[
        (r#"{"data_dir": "state"}"#, |s| {
            s.data_dir == s.config_dir.join("state")
        }),
        (r#"{"local_delivery": "maildir"}"#, |s| {
            s.local_delivery == LocalDelivery::Maildir
        }),
        (
            r#"{"local_delivery": {"lmtp": "unix:/run/dovecot/lmtp"}}"#,
            |s| s.local_delivery == LocalDelivery::Lmtp("unix:/run/dovecot/lmtp".into()),
        ),
        (r#"{"local_delivery": {"lmtp": "127.0.0.1:24"}}"#, |s| {
            s.local_delivery == LocalDelivery::Lmtp("127.0.0.1:24".into())
        }),
        (r#"{"local_delivery": {"lmtp": "[::1]:24"}}"#, |s| {
            matches!(s.local_delivery, LocalDelivery::Lmtp(_))
        }),
        (
            r#"{"local_delivery": {"lmtp": "lmtp.example.com:24"}}"#,
            |s| matches!(s.local_delivery, LocalDelivery::Lmtp(_)),
        ),
        (r#"{"give_up_after": "90s"}"#, |s| {
            s.give_up_after.as_secs() == 90
        }),
        (r#"{"give_up_after": "30m"}"#, |s| {
            s.give_up_after.as_secs() == 1800
        }),
        (r#"{"give_up_after": "20h"}"#, |s| {
            s.give_up_after.as_secs() == 72000
        }),
        (r#"{"monitoring_listen": null}"#, |s| {
            s.monitoring_listen.is_none()
        }),
        (r#"{"srs_secret": null}"#, |s| s.srs_secret.is_none()),
        (r#"{"outbound_bind": "203.0.113.5"}"#, |s| {
            s.outbound_bind.is_some()
        }),
        (r#"{"inbound_policy": {}}"#, |s| {
            s.inbound_policy.spf_fail == PolicyAction::Reject
        }),
        (r#"{"inbound_policy": {"dmarc_reject": "tag"}}"#, |s| {
            s.inbound_policy.dmarc_reject == PolicyAction::Tag
        }),
        (r#"{"hostname": "localhost"}"#, |s| {
            s.hostname == "localhost"
        }),
        (r#"{"mailbox_quota_mb": 0}"#, |s| s.mailbox_quota_mb == 0),
    ];
    for (text, check) in cases {
        assert!(check(&load_ok(text)), "{text}");
    }
}

#[test]
fn bad_values_name_line_and_key() {
    let cases: &[(&str, &str)] = &[
        (
            "{\n  \"max_recipients\": \"ten\"\n}",
            ":2: \"max_recipients\": expected a positive integer, got \"ten\"",
        ),
        (
            "{\"max_recipients\": 0}",
            ":1: \"max_recipients\": expected a positive integer, got 0",
        ),
        (
            "{\"max_recipients\": -3}",
            ":1: \"max_recipients\": expected a positive integer, got -3",
        ),
        (
            "{\"max_message_size_mb\": 1.5}",
            ":1: \"max_message_size_mb\": expected a positive integer, got 1.5",
        ),
        (
            "{\"max_message_size_mb\": 99999999}",
            ":1: \"max_message_size_mb\": expected at most 1048576, got 99999999",
        ),
        (
            "{\"forward_from_rewrite\": \"always\"}",
            ":1: \"forward_from_rewrite\": expected \"auto\" or \"never\", got \"always\"",
        ),
        (
            "{\"dnsbl\": \"zen.spamhaus.org\"}",
            ":1: \"dnsbl\": expected a list of zone name strings, got \"zen.spamhaus.org\"",
        ),
        (
            "{\"dnsbl\": [\"zen spamhaus\"]}",
            ":1: \"dnsbl\": expected a host name (letters, digits, \"-\" and \".\"), got \"zen spamhaus\"",
        ),
        (
            "{\"mailbox_quota_mb\": -1}",
            ":1: \"mailbox_quota_mb\": expected a non-negative integer, got -1",
        ),
        (
            "{\n\n  \"hostname\": \"mail.example.com.\"\n}",
            ":3: \"hostname\": expected a host name (letters, digits, \"-\" and \".\"), got \"mail.example.com.\"",
        ),
        (
            "{\"hostname\": \"a_b\"}",
            ":1: \"hostname\": expected a host name",
        ),
        (
            "{\"hostname\": \"\"}",
            ":1: \"hostname\": expected a host name",
        ),
        (
            "{\"hostname\": \"a..b\"}",
            ":1: \"hostname\": expected a host name",
        ),
        (
            "{\"hostname\": 5}",
            ":1: \"hostname\": expected a host name",
        ),
        (
            "{\"smtp_listen\": \"0.0.0.0:25\"}",
            ":1: \"smtp_listen\": expected a list of \"ip:port\" strings, got \"0.0.0.0:25\"",
        ),
        (
            "{\"smtp_listen\": [\"::1:25\"]}",
            ":1: \"smtp_listen\": expected \"ip:port\" (IPv6 as \"[::1]:25\"), got \"::1:25\"",
        ),
        (
            "{\"imap_listen\": [\"localhost:143\"]}",
            ":1: \"imap_listen\": expected \"ip:port\"",
        ),
        (
            "{\"pop3s_listen\": [995]}",
            ":1: \"pop3s_listen\": expected \"ip:port\"",
        ),
        (
            "{\"monitoring_listen\": \"9090\"}",
            ":1: \"monitoring_listen\": expected \"ip:port\"",
        ),
        (
            "{\"data_dir\": \"\"}",
            ":1: \"data_dir\": expected a non-empty string, got \"\"",
        ),
        (
            "{\"suffix_separators\": \"@\"}",
            ":1: \"suffix_separators\": expected a string of characters",
        ),
        (
            "{\"drop_characters\": 1}",
            ":1: \"drop_characters\": expected a string of characters",
        ),
        (
            "{\"local_delivery\": \"mbox\"}",
            ":1: \"local_delivery\": expected \"maildir\", {\"mda\"",
        ),
        (
            "{\"local_delivery\": {\"mda\": []}}",
            ":1: \"local_delivery\": expected \"mda\": a non-empty list",
        ),
        (
            "{\"local_delivery\": {\"mda\": [\"\"]}}",
            ":1: \"local_delivery\": expected \"mda\": a non-empty list",
        ),
        (
            "{\"local_delivery\": {\"mda\": \"maildrop\"}}",
            ":1: \"local_delivery\": expected \"mda\"",
        ),
        (
            "{\"local_delivery\": {\"mda\": [\"x\", 1]}}",
            ":1: \"local_delivery\": expected \"mda\"",
        ),
        (
            "{\"local_delivery\": {\"lmtp\": \"unix:run/lmtp\"}}",
            ":1: \"local_delivery\": expected \"lmtp\"",
        ),
        (
            "{\"local_delivery\": {\"lmtp\": \"host\"}}",
            ":1: \"local_delivery\": expected \"lmtp\"",
        ),
        (
            "{\"local_delivery\": {\"lmtp\": \"::1:24\"}}",
            ":1: \"local_delivery\": expected \"lmtp\"",
        ),
        (
            "{\"local_delivery\": {\"lmtp\": \"h:0\"}}",
            ":1: \"local_delivery\": expected \"lmtp\"",
        ),
        (
            "{\"local_delivery\": {\"smtp\": \"h:25\"}}",
            ":1: \"local_delivery\": expected \"maildir\"",
        ),
        (
            "{\"local_delivery\": {\"mda\": [\"x\"], \"lmtp\": \"h:24\"}}",
            ":1: \"local_delivery\": expected \"maildir\"",
        ),
        (
            "{\"give_up_after\": \"20\"}",
            ":1: \"give_up_after\": expected a duration such as \"90s\", \"30m\", \"20h\" or \"5d\", got \"20\"",
        ),
        (
            "{\"give_up_after\": \"0h\"}",
            ":1: \"give_up_after\": expected a duration",
        ),
        (
            "{\"give_up_after\": \"h\"}",
            ":1: \"give_up_after\": expected a duration",
        ),
        (
            "{\"give_up_after\": \"\"}",
            ":1: \"give_up_after\": expected a duration",
        ),
        (
            "{\"give_up_after\": \"-1h\"}",
            ":1: \"give_up_after\": expected a duration",
        ),
        (
            "{\"give_up_after\": \"2w\"}",
            ":1: \"give_up_after\": expected a duration",
        ),
        (
            "{\"give_up_after\": \"1.5h\"}",
            ":1: \"give_up_after\": expected a duration",
        ),
        (
            "{\"give_up_after\": \"99999999999999999999d\"}",
            ":1: \"give_up_after\": expected a duration",
        ),
        (
            "{\"give_up_after\": \"3ñ\"}",
            ":1: \"give_up_after\": expected a duration",
        ),
        (
            "{\"give_up_after\": 72000}",
            ":1: \"give_up_after\": expected a duration",
        ),
        (
            "{\"dns_servers\": [\"resolver\"]}",
            ":1: \"dns_servers\": expected \"ip\" or \"ip:port\", got \"resolver\"",
        ),
        (
            "{\"dns_servers\": \"1.1.1.1\"}",
            ":1: \"dns_servers\": expected a list of \"ip\" or \"ip:port\" strings",
        ),
        (
            "{\"outbound_smtp_port\": 0}",
            ":1: \"outbound_smtp_port\": expected a port number (1-65535), got 0",
        ),
        (
            "{\"outbound_smtp_port\": 65536}",
            ":1: \"outbound_smtp_port\": expected a port number",
        ),
        (
            "{\"outbound_smtp_port\": \"25\"}",
            ":1: \"outbound_smtp_port\": expected a port number",
        ),
        (
            "{\"inbound_policy\": \"reject\"}",
            ":1: \"inbound_policy\": expected an object",
        ),
        (
            "{\"inbound_policy\": {\"spf_fail\": \"drop\"}}",
            ":1: \"inbound_policy\": \"spf_fail\": expected \"reject\" or \"tag\", got \"drop\"",
        ),
        (
            "{\"inbound_policy\": {\"dkim_fail\": \"tag\"}}",
            ":1: \"inbound_policy\": unknown key \"dkim_fail\"",
        ),
        (
            "{\"srs_secret\": \"\"}",
            ":1: \"srs_secret\": expected a non-empty string",
        ),
        (
            "{\"srs_secret\": \"(set)\"}",
            ":1: \"srs_secret\": \"(set)\" is what print-config shows",
        ),
        (
            "{\"haproxy_incoming\": \"yes\"}",
            ":1: \"haproxy_incoming\": expected true or false, got \"yes\"",
        ),
        (
            "{\"arc_seal\": 1}",
            ":1: \"arc_seal\": expected true or false, got 1",
        ),
        (
            "{\"relay_networks\": [\"192.0.2.0/33\"]}",
            ":1: \"relay_networks\": \"192.0.2.0/33\": prefix length must be 0-32",
        ),
        (
            "{\"relay_networks\": [\"lan\"]}",
            ":1: \"relay_networks\": \"lan\" is not an IP address or network",
        ),
        (
            "{\"relay_networks\": [7]}",
            ":1: \"relay_networks\": expected a CIDR network",
        ),
        (
            "{\"max_connections\": 0}",
            ":1: \"max_connections\": expected a positive integer, got 0",
        ),
        (
            "{\"max_connections_per_address\": \"50\"}",
            ":1: \"max_connections_per_address\": expected a positive integer, got \"50\"",
        ),
        (
            "{\"outbound_bind\": \"eth0\"}",
            ":1: \"outbound_bind\": expected an IP address, got \"eth0\"",
        ),
        (
            "{\n \"arc_seal\": true,\n \"arc_seal\": false\n}",
            ":3: key \"arc_seal\" appears twice",
        ),
        ("[1, 2]", ":1: expected a JSON object of settings"),
        (
            "{\"acme\": \"https://acme.example/dir\"}",
            ":1: \"acme\": expected an object with \"email\" and \"directory\"",
        ),
        (
            "{\"acme\": {\"email\": \"a@b.example\"}}",
            ":1: \"acme\": \"directory\" is missing",
        ),
        (
            "{\"acme\": {\"email\": \"a@b.example\", \"directory\": \"http://acme.example/\"}}",
            ":1: \"acme\": \"directory\": expected an https:// URL, got \"http://acme.example/\"",
        ),
        (
            "{\"acme\": {\"email\": \"nobody\", \"directory\": \"https://acme.example/\"}}",
            ":1: \"acme\": \"email\": expected an email address, got \"nobody\"",
        ),
        (
            "{\"acme\": {\"mail\": \"a@b.example\"}}",
            ":1: \"acme\": unknown key \"mail\"",
        ),
        (
            "{\"https_listen\": \"0.0.0.0:443\"}",
            ":1: \"https_listen\": expected a list",
        ),
    ];
    for (text, want) in cases {
        let err = load_err(text);
        assert!(err.starts_with(want), "{text}\n got: {err}\nwant: {want}");
        assert!(!err.contains('\n'), "{err}");
    }
}

#[test]
fn long_values_are_shortened() {
    let long = "x".repeat(200);
    let err = load_err(&format!("{{\"max_recipients\": \"{long}\"}}"));
    assert!(err.ends_with("..."), "{err}");
    assert!(err.len() < 150, "{err}");
}

#[test]
fn unknown_key() {
    let text = "{\n  \"hostname\": \"mx.example.com\",\n  \"foo\": 1\n}\n";
    assert_eq!(load_err(text), ":3: unknown key \"foo\"");
    // A nested key of the same name is not the top-level one.
    let text = "{\n  \"inbound_policy\": {\"foo\": \"tag\"},\n  \"foo\": 1\n}\n";
    assert_eq!(
        load_err(text),
        ":2: \"inbound_policy\": unknown key \"foo\""
    );
}

#[test]
fn syntax_error_has_line_and_column() {
    let err = load_err("{\n  \"hostname\": \"a\",\n  \"arc_seal\": tru\n}\n");
    assert!(
        err.starts_with(":3:17: invalid JSON: expected ident"),
        "{err}"
    );
    assert!(err.contains(": invalid JSON: "), "{err}");
    assert!(!err.contains("at line"), "{err}");
    let err = load_err("{\n  \"hostname\": \"a\",\n}\n");
    assert!(
        err.starts_with(":3:1: invalid JSON: trailing comma"),
        "{err}"
    );
}

#[test]
fn unreadable_file_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("conf/tambo.json")).unwrap();
    let err = Settings::load(tmp.path()).unwrap_err().0;
    assert!(
        err.starts_with(&format!("{}/conf/tambo.json: ", tmp.path().display())),
        "{err}"
    );
}

#[test]
fn key_lines() {
    let text =
        "{\"a\": {\"b\": [1, {\"c\": 2}]},\n\"d\\\"q\" : \"x:y\",\n\n \"e\":\n[\"f\", \"g\"]}";
    let want = [
        ("a".to_string(), 1),
        ("d\"q".to_string(), 2),
        ("e".to_string(), 4),
    ];
    assert_eq!(top_level_key_lines(text), want);
}

#[test]
fn ip_net_parse_table() {
    let cases: &[(&str, Option<(&str, u8)>)] = &[
        ("192.0.2.0/24", Some(("192.0.2.0", 24))),
        ("192.0.2.7/24", Some(("192.0.2.7", 24))),
        ("10.1.2.3", Some(("10.1.2.3", 32))),
        ("0.0.0.0/0", Some(("0.0.0.0", 0))),
        ("2001:db8::/32", Some(("2001:db8::", 32))),
        ("::1", Some(("::1", 128))),
        ("::/0", Some(("::", 0))),
        ("::/128", Some(("::", 128))),
        ("192.0.2.0/33", None),
        ("2001:db8::/129", None),
        ("192.0.2.0/", None),
        ("192.0.2.0/+8", None),
        ("192.0.2.0/-1", None),
        ("192.0.2/24", None),
        ("/24", None),
        ("", None),
        ("example.com/24", None),
        ("192.0.2.0/24/1", None),
    ];
    for (text, want) in cases {
        let got = IpNet::parse(text).ok().map(|n| (n.addr, n.prefix));
        let want = want.map(|(a, p)| (a.parse::<IpAddr>().unwrap(), p));
        assert_eq!(got, want, "{text}");
    }
}

#[test]
fn ip_net_contains_table() {
    let cases = [
        ("192.0.2.0/24", "192.0.2.1", true),
        ("192.0.2.0/24", "192.0.2.255", true),
        ("192.0.2.0/24", "192.0.3.1", false),
        ("192.0.2.77/24", "192.0.2.1", true),
        ("192.0.2.1", "192.0.2.1", true),
        ("192.0.2.1", "192.0.2.2", false),
        ("0.0.0.0/0", "203.0.113.9", true),
        ("0.0.0.0/0", "2001:db8::1", false),
        ("192.0.2.0/24", "::ffff:192.0.2.9", true),
        ("192.0.2.0/24", "::ffff:192.0.3.9", false),
        ("192.0.2.0/24", "2001:db8::1", false),
        ("2001:db8::/32", "2001:db8:1::1", true),
        ("2001:db8::/32", "2001:db9::1", false),
        ("::/0", "2001:db8::1", true),
        ("::1", "::1", true),
        ("::1", "::2", false),
        ("::ffff:192.0.2.0/120", "192.0.2.5", true),
        ("2001:db8::/32", "192.0.2.5", false),
        ("10.0.0.0/8", "10.255.255.255", true),
        ("10.0.0.0/8", "11.0.0.0", false),
    ];
    for (net, ip, want) in cases {
        let net = IpNet::parse(net).unwrap();
        assert_eq!(
            net.contains(ip.parse().unwrap()),
            want,
            "{net} contains {ip}"
        );
    }
}

#[test]
fn duration_format_table() {
    let cases = [
        (90, "90s"),
        (1800, "30m"),
        (72000, "20h"),
        (432000, "5d"),
        (3601, "3601s"),
        (0, "0s"),
    ];
    for (secs, text) in cases {
        assert_eq!(format_duration(Duration::from_secs(secs)), text);
    }
}

#[test]
fn to_json_defaults_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Settings::load(tmp.path()).unwrap();
    let j = s.to_json();
    let keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, KEYS);
    assert_eq!(j["smtp_listen"], json!(["0.0.0.0:25", "[::]:25"]));
    assert_eq!(j["give_up_after"], json!("20h"));
    assert_eq!(j["monitoring_listen"], Value::Null);
    assert_eq!(j["srs_secret"], Value::Null);
    assert_eq!(j["local_delivery"], json!("maildir"));
    assert_eq!(
        j["data_dir"],
        json!(tmp.path().join("data").to_string_lossy())
    );
    assert_eq!(
        j["inbound_policy"],
        json!({"spf_fail": "reject", "dmarc_reject": "reject"})
    );
}

#[test]
fn to_json_never_shows_the_secret() {
    let s = load_ok(r#"{"srs_secret": "very-secret-value"}"#);
    assert_eq!(s.to_json()["srs_secret"], json!("(set)"));
    assert!(!format!("{s:?}").contains("very-secret-value"));
}

#[test]
fn to_json_round_trips() {
    let texts = [
        "{}",
        r#"{"hostname": "mx.example.org", "monitoring_listen": "[::1]:9100",
            "local_delivery": {"mda": ["procmail", "-d", "%to_user%"]},
            "give_up_after": "90m", "dns_servers": ["::1"], "relay_networks": ["10.0.0.0/8", "::1"],
            "outbound_bind": "192.0.2.1", "inbound_policy": {"spf_fail": "tag", "dmarc_reject": "tag"},
            "haproxy_incoming": true, "arc_seal": false, "mailbox_quota_mb": 7,
            "forward_from_rewrite": "never", "dnsbl": ["bl.example"],
            "max_connections": 10, "max_connections_per_address": 2,
            "data_dir": "var", "suffix_separators": "-+", "drop_characters": ""}"#,
        r#"{"local_delivery": {"lmtp": "unix:/run/dovecot/lmtp"}, "give_up_after": "3601s"}"#,
    ];
    for text in texts {
        let (tmp, first) = load_text(text);
        let first = first.unwrap();
        let printed = serde_json::to_string_pretty(&first.to_json()).unwrap();
        std::fs::write(tmp.path().join("conf/tambo.json"), &printed).unwrap();
        let second = Settings::load(tmp.path()).unwrap_or_else(|e| panic!("{printed}: {e}"));
        assert_eq!(first, second, "{printed}");
    }
}

#[test]
fn pop3_listeners_are_read() {
    let s = load_ok(r#"{"pop3_listen": ["0.0.0.0:110"], "pop3s_listen": ["[::1]:995"]}"#);
    assert_eq!(s.pop3_listen, ["0.0.0.0:110".parse().unwrap()]);
    assert_eq!(s.pop3s_listen, ["[::1]:995".parse().unwrap()]);
    assert!(load_ok("{}").pop3_listen.is_empty());
}
