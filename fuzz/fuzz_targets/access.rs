//! `conf/access` rules (`smtpd::access::AccessRules::parse`). Invalid UTF-8 is replaced, so
//! every input reaches the parser; parsed rules are then queried, and a REJECT's reply must
//! be a single well-formed reply line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use tambo::smtpd::access::{AccessRules, Action};

const IPS: [IpAddr; 4] = [
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
    IpAddr::V6(Ipv6Addr::LOCALHOST),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
];
const ADDRS: [&str; 6] = [
    "",
    "<>",
    "user@example.org",
    "<User@Sub.Example.ORG>",
    "x@[192.0.2.1]",
    "jos\u{e9}@m\u{fc}ller.example",
];

fn check(action: Option<&Action>) {
    if let Some(reply) = action.and_then(Action::reply) {
        let wire = reply.to_bytes();
        assert!(wire.ends_with(b"\r\n"));
        assert_eq!(wire.iter().filter(|&&b| b == b'\n').count(), 1, "{reply:?}");
        assert!(wire.len() <= 512, "reply line of {} octets", wire.len());
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(rules) = AccessRules::parse(Path::new("access"), &text) else {
        return;
    };
    assert_eq!(rules.is_empty(), rules.len() == 0);
    for ip in IPS {
        check(rules.connect(ip));
    }
    for addr in ADDRS {
        check(rules.from(addr));
        check(rules.to(addr));
    }
    // The patterns the file itself names, as queries.
    for word in text.split_whitespace() {
        let pattern = word.split_once(':').map_or(word, |(_, p)| p);
        check(rules.from(pattern));
        check(rules.to(pattern));
        if let Ok(ip) = pattern
            .split('/')
            .next()
            .unwrap_or(pattern)
            .parse::<IpAddr>()
        {
            check(rules.connect(ip));
        }
    }
});
