//! The PROXY protocol header (HAProxy, versions 1 and 2) that a load balancer sends in front
//! of the SMTP stream when `haproxy_incoming` is on (SPEC §3). Sans-I/O (the accept loop,
//! `net::accept`, reads it):
//! [`parse`] looks at the bytes received so far and says whether to read more, where the
//! header ends, or that the connection must be dropped.
//!
//! Reference: <https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt> (cited below as
//! "PP §n").
//!
//! For the driver:
//! - Read before the greeting, and keep reading while [`ProxyStatus::NeedMore`]; PP §2 says
//!   the receiver MUST NOT start processing (we speak first in SMTP) before a complete, valid
//!   header. Apply a short time limit (PP §2: at least 3 s) and drop the connection on
//!   [`ProxyStatus::Invalid`] without a reply: the peer is not an SMTP client.
//! - `Done { header_len, .. }`: `buf[header_len..]` already belongs to the SMTP stream.
//! - `source: None` (v1 `UNKNOWN`, v2 `LOCAL`, v2 families we do not take addresses from)
//!   means "use the real peer address of the socket", i.e. the proxy's own address (PP §2.1,
//!   §2.2). So the proxy's address should not be in `relay_networks`.
//! - Bytes that cannot start either header (a client speaking SMTP, HTTP or TLS directly) are
//!   refused as soon as the first byte that differs arrives, without waiting for more.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// PP §2.1: the longest v1 line, CRLF included (`PROXY UNKNOWN` with two IPv6 addresses).
pub const V1_MAX_LEN: usize = 107;
/// PP §2.2: the 12-byte v2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Our bound on a whole v2 header. The length field allows 64 KiB of TLVs; real proxies send
/// a few hundred bytes at most, and the bound keeps what an unauthenticated peer can make us
/// buffer small.
pub const V2_MAX_LEN: usize = 4096;

const V1_PREFIX: &[u8] = b"PROXY ";
const V2_FIXED_LEN: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyStatus {
    /// Everything so far can be the start of a valid header: read more.
    NeedMore,
    /// A complete, valid header of `header_len` bytes; `source` is the original client
    /// (None: use the socket's peer address).
    Done {
        header_len: usize,
        source: Option<SocketAddr>,
    },
    /// Not a valid header (the reason is for the log); drop the connection.
    Invalid(&'static str),
}

/// Parses the PROXY header at the start of `buf` (the bytes received so far).
pub fn parse(buf: &[u8]) -> ProxyStatus {
    match buf.first() {
        None => ProxyStatus::NeedMore,
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf),
        Some(_) => ProxyStatus::Invalid(NOT_PROXY),
    }
}

const NOT_PROXY: &str = "not a PROXY protocol header";

fn parse_v1(buf: &[u8]) -> ProxyStatus {
    // PP §2.1: the CRLF must be within the first 107 bytes.
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    match find_crlf(window) {
        Err(why) => ProxyStatus::Invalid(why),
        Ok(Some(end)) => match parse_v1_line(&window[..end]) {
            Ok(source) => ProxyStatus::Done {
                header_len: end + 2,
                source,
            },
            Err(why) => ProxyStatus::Invalid(why),
        },
        Ok(None) if buf.len() >= V1_MAX_LEN => {
            ProxyStatus::Invalid("v1 header longer than 107 bytes")
        }
        Ok(None) => match check_v1_partial(window) {
            Ok(()) => ProxyStatus::NeedMore,
            Err(why) => ProxyStatus::Invalid(why),
        },
    }
}

/// Where the CRLF starts, if it has arrived. PP §2.1: a lone CR or LF never ends the line,
/// and nothing else may contain them, so either one is an error at once.
fn find_crlf(bytes: &[u8]) -> Result<Option<usize>, &'static str> {
    for (i, &b) in bytes.iter().enumerate() {
        match (b, bytes.get(i + 1)) {
            (b'\n', _) => return Err("bare LF in v1 header"),
            (b'\r', Some(b'\n')) => return Ok(Some(i)),
            (b'\r', Some(_)) => return Err("bare CR in v1 header"),
            (b'\r', None) => return Ok(None),
            _ => {}
        }
    }
    Ok(None)
}

/// A complete v1 line without its CRLF.
fn parse_v1_line(line: &[u8]) -> Result<Option<SocketAddr>, &'static str> {
    let rest = line.strip_prefix(V1_PREFIX).ok_or(NOT_PROXY)?;
    // PP §2.1: after UNKNOWN the receiver ignores everything up to the CRLF.
    if rest == b"UNKNOWN" || rest.starts_with(b"UNKNOWN ") {
        return Ok(None);
    }
    let fields: Vec<&[u8]> = rest.split(|&b| b == b' ').collect();
    let [proto, src, dst, sport, dport] = fields[..] else {
        return Err("v1 header needs protocol, two addresses and two ports, one space apart");
    };
    let family = Family::from_v1(proto).ok_or("v1 protocol is not TCP4, TCP6 or UNKNOWN")?;
    let src = family.parse_addr(src)?;
    family.parse_addr(dst)?;
    let sport = parse_port(sport)?;
    parse_port(dport)?;
    Ok(Some(SocketAddr::new(src, sport)))
}

/// A v1 line whose CRLF has not arrived: refused as soon as no ending can make it valid.
fn check_v1_partial(partial: &[u8]) -> Result<(), &'static str> {
    let n = partial.len().min(V1_PREFIX.len());
    if partial[..n] != V1_PREFIX[..n] {
        return Err(NOT_PROXY);
    }
    if let Some(line) = partial.strip_suffix(b"\r") {
        // Only the LF is missing: the line must already be complete.
        return parse_v1_line(line).map(|_| ());
    }
    let Some(rest) = partial.strip_prefix(V1_PREFIX) else {
        return Ok(());
    };
    let fields: Vec<&[u8]> = rest.split(|&b| b == b' ').collect();
    // `split` always yields at least one item; the last is the field still arriving.
    let Some((current, done)) = fields.split_last() else {
        return Ok(());
    };
    let Some((proto, addrs_and_ports)) = done.split_first() else {
        let protocols: [&[u8]; 3] = [b"TCP4", b"TCP6", b"UNKNOWN"];
        if protocols.iter().any(|p| p.starts_with(current)) {
            return Ok(());
        }
        return Err("v1 protocol is not TCP4, TCP6 or UNKNOWN");
    };
    if *proto == b"UNKNOWN" {
        return Ok(());
    }
    let family = Family::from_v1(proto).ok_or("v1 protocol is not TCP4, TCP6 or UNKNOWN")?;
    check_v1_fields(family, addrs_and_ports, current)
}

/// Complete fields after the protocol are checked fully, the one still arriving by its
/// characters only.
fn check_v1_fields(family: Family, done: &[&[u8]], current: &[u8]) -> Result<(), &'static str> {
    for (i, field) in done.iter().enumerate() {
        match i {
            0 | 1 => family.parse_addr(field).map(|_| ())?,
            2 => parse_port(field).map(|_| ())?,
            _ => return Err("v1 header has too many fields"),
        }
    }
    let ok = match done.len() {
        0 | 1 => current.iter().all(|&b| family.is_addr_char(b)),
        _ => could_be_port(current),
    };
    if ok {
        Ok(())
    } else {
        Err("bad character in v1 header")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn from_v1(proto: &[u8]) -> Option<Family> {
        match proto {
            b"TCP4" => Some(Family::V4),
            b"TCP6" => Some(Family::V6),
            _ => None,
        }
    }

    /// PP §2.1: dotted quad without leading zeroes (Rust's parser refuses them), or IPv6.
    fn parse_addr(self, field: &[u8]) -> Result<IpAddr, &'static str> {
        let text = std::str::from_utf8(field).map_err(|_| "bad address in v1 header")?;
        match self {
            Family::V4 => text.parse::<Ipv4Addr>().map(IpAddr::V4),
            Family::V6 => text.parse::<Ipv6Addr>().map(IpAddr::V6),
        }
        .map_err(|_| "bad address in v1 header")
    }

    fn is_addr_char(self, b: u8) -> bool {
        match self {
            Family::V4 => b.is_ascii_digit() || b == b'.',
            // Hex groups, and a dotted quad at the end (`::ffff:192.0.2.1`).
            Family::V6 => b.is_ascii_hexdigit() || b == b':' || b == b'.',
        }
    }
}

/// PP §2.1: decimal 0-65535, no leading zeroes.
fn parse_port(field: &[u8]) -> Result<u16, &'static str> {
    const BAD: &str = "bad port in v1 header";
    if field.is_empty() || field.len() > 5 || !field.iter().all(u8::is_ascii_digit) {
        return Err(BAD);
    }
    if field.len() > 1 && field[0] == b'0' {
        return Err(BAD);
    }
    // Digits only, at most five: the text is ASCII and fits in u32.
    let value: u32 = field.iter().fold(0, |n, &d| n * 10 + u32::from(d - b'0'));
    u16::try_from(value).map_err(|_| BAD)
}

/// Whether more digits can still make `partial` a valid port.
fn could_be_port(partial: &[u8]) -> bool {
    partial.is_empty() || parse_port(partial).is_ok()
}

// PP §2.2: the 13th byte (version and command) and the 14th (family and transport).
const V2_VERSION: u8 = 0x2;
const CMD_LOCAL: u8 = 0x0;
const CMD_PROXY: u8 = 0x1;
const AF_INET: u8 = 0x1;
const AF_INET6: u8 = 0x2;
const AF_UNIX: u8 = 0x3;
const TRANSPORT_STREAM: u8 = 0x1;
const TRANSPORT_DGRAM: u8 = 0x2;

fn parse_v2(buf: &[u8]) -> ProxyStatus {
    match check_v2(buf) {
        Ok(Some(status)) => status,
        Ok(None) => ProxyStatus::NeedMore,
        Err(why) => ProxyStatus::Invalid(why),
    }
}

/// Each field is checked as soon as it has arrived; `Ok(None)` means read more.
fn check_v2(buf: &[u8]) -> Result<Option<ProxyStatus>, &'static str> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] != V2_SIGNATURE[..n] {
        return Err(NOT_PROXY);
    }
    check_v2_bytes_13_14(buf)?;
    let (Some(&ver_cmd), Some(&fam), Some(len)) = (buf.get(12), buf.get(13), buf.get(14..16))
    else {
        return Ok(None);
    };
    let addr_len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    let header_len = V2_FIXED_LEN + addr_len;
    if header_len > V2_MAX_LEN {
        return Err("PROXY v2 header too long");
    }
    let is_proxy = ver_cmd & 0xf == CMD_PROXY;
    if is_proxy && addr_len < min_addr_len(fam >> 4) {
        return Err("PROXY v2 address block shorter than its family needs");
    }
    let Some(block) = buf.get(V2_FIXED_LEN..header_len) else {
        return Ok(None);
    };
    // PP §2.2: LOCAL ignores the address block; TLVs after the addresses are skipped.
    let source = if is_proxy {
        v2_source(fam, block)
    } else {
        None
    };
    Ok(Some(ProxyStatus::Done { header_len, source }))
}

/// PP §2.2: only version 2, the LOCAL and PROXY commands, and the listed families and
/// transports; checked as soon as each byte arrives.
fn check_v2_bytes_13_14(buf: &[u8]) -> Result<(), &'static str> {
    if let Some(&ver_cmd) = buf.get(12) {
        if ver_cmd >> 4 != V2_VERSION {
            return Err("unsupported PROXY protocol version");
        }
        if !matches!(ver_cmd & 0xf, CMD_LOCAL | CMD_PROXY) {
            return Err("unknown PROXY v2 command");
        }
    }
    match buf.get(13) {
        Some(&fam) if fam >> 4 > AF_UNIX || fam & 0xf > TRANSPORT_DGRAM => {
            Err("unknown PROXY v2 address family or transport")
        }
        _ => Ok(()),
    }
}

/// PP §2.2: the address block sizes of each family.
fn min_addr_len(family: u8) -> usize {
    match family {
        AF_INET => 12,
        AF_INET6 => 36,
        AF_UNIX => 216,
        _ => 0,
    }
}

/// The source of TCP over IPv4 or IPv6. PP §2.2: a receiver falls back to the real
/// endpoints (None) for the valid combinations it does not take addresses from
/// (UNSPEC, UDP, UNIX sockets).
fn v2_source(fam: u8, block: &[u8]) -> Option<SocketAddr> {
    if fam & 0xf != TRANSPORT_STREAM {
        return None;
    }
    let (ip, port_at) = match fam >> 4 {
        AF_INET => (IpAddr::from(<[u8; 4]>::try_from(block.get(..4)?).ok()?), 8),
        AF_INET6 => (
            IpAddr::from(<[u8; 16]>::try_from(block.get(..16)?).ok()?),
            32,
        ),
        _ => return None,
    };
    let port = block.get(port_at..port_at + 2)?;
    Some(SocketAddr::new(ip, u16::from_be_bytes([port[0], port[1]])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn done(header_len: usize, source: Option<&str>) -> ProxyStatus {
        ProxyStatus::Done {
            header_len,
            source: source.map(|s| s.parse().unwrap()),
        }
    }

    /// A v2 header: signature, version/command, family/transport, then `block`.
    fn v2(ver_cmd: u8, fam: u8, block: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(ver_cmd);
        out.push(fam);
        out.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
        out.extend_from_slice(block);
        out
    }

    fn v2_tcp4() -> Vec<u8> {
        // 192.0.2.1:56324 -> 198.51.100.7:25
        let block = [192, 0, 2, 1, 198, 51, 100, 7, 0xdc, 0x04, 0, 25];
        v2(0x21, 0x11, &block)
    }

    fn v2_tcp6() -> Vec<u8> {
        let mut block = Vec::new();
        block.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        block.extend_from_slice(&"2001:db8::25".parse::<Ipv6Addr>().unwrap().octets());
        block.extend_from_slice(&[0x30, 0x39, 0, 25]);
        v2(0x21, 0x21, &block)
    }

    /// Valid headers and what they parse to (all complete, nothing after them).
    fn valid_cases() -> Vec<(Vec<u8>, Option<&'static str>)> {
        let mut tlvs = v2_tcp4();
        // A PP2_TYPE_AUTHORITY TLV (0x02) after the addresses: skipped, counted in the length.
        tlvs[15] += 7;
        tlvs.extend_from_slice(&[0x02, 0x00, 0x04, b'm', b'x', b'.', b'x']);
        vec![
            (b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n".to_vec(), Some("192.168.0.1:56324")),
            (b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n".to_vec(), Some("255.255.255.255:65535")),
            (b"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n".to_vec(), Some("0.0.0.0:0")),
            (b"PROXY TCP6 2001:db8::1 2001:db8::2 4242 25\r\n".to_vec(), Some("[2001:db8::1]:4242")),
            (b"PROXY TCP6 ::ffff:192.0.2.1 ::1 1 25\r\n".to_vec(), Some("[::ffff:192.0.2.1]:1")),
            (b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n".to_vec(), Some("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535")),
            (b"PROXY UNKNOWN\r\n".to_vec(), None),
            (b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n".to_vec(), None),
            (v2_tcp4(), Some("192.0.2.1:56324")),
            (v2_tcp6(), Some("[2001:db8::1]:12345")),
            (tlvs, Some("192.0.2.1:56324")),
            // LOCAL (health checks): no address, and any address block is ignored.
            (v2(0x20, 0x00, &[]), None),
            (v2(0x20, 0x11, &[1, 2, 3]), None),
            // PROXY with families we do not take addresses from: the real endpoints.
            (v2(0x21, 0x00, &[]), None),
            (v2(0x21, 0x12, &[192, 0, 2, 1, 198, 51, 100, 7, 0, 53, 0, 53]), None),
            (v2(0x21, 0x31, &[0; 216]), None),
        ]
    }

    #[test]
    fn valid_headers() {
        for (header, source) in valid_cases() {
            assert_eq!(parse(&header), done(header.len(), source), "{header:?}");
        }
    }

    #[test]
    fn v1_longest_line_is_107_bytes() {
        let (line, _) = &valid_cases()[7];
        assert_eq!(line.len(), V1_MAX_LEN);
    }

    #[test]
    fn every_split_needs_more_until_complete() {
        for (header, source) in valid_cases() {
            for cut in 0..header.len() {
                assert_eq!(
                    parse(&header[..cut]),
                    ProxyStatus::NeedMore,
                    "{header:?} cut at {cut}"
                );
            }
            assert_eq!(parse(&header), done(header.len(), source));
        }
    }

    #[test]
    fn trailing_smtp_data_is_left_to_the_caller() {
        for (header, source) in valid_cases() {
            let mut stream = header.clone();
            stream.extend_from_slice(b"EHLO client.example\r\nMAIL FROM:<a@b.example>\r\n");
            let status = parse(&stream);
            assert_eq!(status, done(header.len(), source));
            let ProxyStatus::Done { header_len, .. } = status else {
                unreachable!()
            };
            assert_eq!(
                &stream[header_len..],
                b"EHLO client.example\r\nMAIL FROM:<a@b.example>\r\n"
            );
        }
    }

    #[test]
    fn invalid_headers() {
        let mut too_long_v2 = V2_SIGNATURE.to_vec();
        too_long_v2.extend_from_slice(&[0x21, 0x11, 0x10, 0x00]);
        let cases: Vec<(&[u8], &str)> = vec![
            // Not a PROXY header at all: refused on the first differing byte.
            (b"EHLO client.example\r\n", NOT_PROXY),
            (b"E", NOT_PROXY),
            (b"POST / HTTP/1.1\r\n", NOT_PROXY),
            (b"PROX ", NOT_PROXY),
            (b"proxy TCP4 ", NOT_PROXY),
            (b"\x16\x03\x01", NOT_PROXY),
            (b"\r\n\r\n\x00\r\nQUIX", NOT_PROXY),
            (b"\r\nEHLO", NOT_PROXY),
            // v1 framing.
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "bare LF in v1 header"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "bare CR in v1 header"),
            (b"PROXY UNKNOWN\n", "bare LF in v1 header"),
            (b"PROXY UNKNOWN aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n", "v1 header longer than 107 bytes"),
            // v1 fields.
            (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "v1 protocol is not TCP4, TCP6 or UNKNOWN"),
            (b"PROXY TCP5", "v1 protocol is not TCP4, TCP6 or UNKNOWN"),
            (b"PROXY UNKNOWNX\r\n", "v1 header needs protocol, two addresses and two ports, one space apart"),
            (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "v1 header needs protocol, two addresses and two ports, one space apart"),
            (b"PROXY TCP4  1", "bad address in v1 header"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "v1 header needs protocol, two addresses and two ports, one space apart"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "v1 header needs protocol, two addresses and two ports, one space apart"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ", "v1 header has too many fields"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r", "v1 header needs protocol, two addresses and two ports, one space apart"),
            (b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "bad address in v1 header"),
            (b"PROXY TCP4 1.2.3.256 ", "bad address in v1 header"),
            (b"PROXY TCP4 192.168.01.1 5.6.7.8 1 2\r\n", "bad address in v1 header"),
            (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "bad address in v1 header"),
            (b"PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n", "bad address in v1 header"),
            (b"PROXY TCP4 2001:", "bad character in v1 header"),
            (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "bad address in v1 header"),
            (b"PROXY TCP6 ::1 ::1::2 1 2\r\n", "bad address in v1 header"),
            (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "bad address in v1 header"),
            (b"PROXY TCP6 fe80::1%", "bad character in v1 header"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "bad port in v1 header"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", "bad port in v1 header"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 025 2\r\n", "bad port in v1 header"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 02", "bad character in v1 header"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", "bad port in v1 header"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 -2\r\n", "bad port in v1 header"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 123456", "bad character in v1 header"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2x\r\n", "bad port in v1 header"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2x", "bad character in v1 header"),
            // v2.
            (b"\r\n\r\n\x00\r\nQUIT\n\x11", "unsupported PROXY protocol version"),
            (b"\r\n\r\n\x00\r\nQUIT\n\x22", "unknown PROXY v2 command"),
            (b"\r\n\r\n\x00\r\nQUIT\n\x21\x41", "unknown PROXY v2 address family or transport"),
            (b"\r\n\r\n\x00\r\nQUIT\n\x21\x13", "unknown PROXY v2 address family or transport"),
            (b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0b", "PROXY v2 address block shorter than its family needs"),
            (b"\r\n\r\n\x00\r\nQUIT\n\x21\x21\x00\x0c", "PROXY v2 address block shorter than its family needs"),
            (b"\r\n\r\n\x00\r\nQUIT\n\x21\x31\x00\x24", "PROXY v2 address block shorter than its family needs"),
            (&too_long_v2, "PROXY v2 header too long"),
            (b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\xff\xff", "PROXY v2 header too long"),
        ];
        for (input, why) in cases {
            assert_eq!(
                parse(input),
                ProxyStatus::Invalid(why),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn longest_allowed_v2_header() {
        let block = vec![0u8; V2_MAX_LEN - V2_FIXED_LEN];
        let header = v2(0x20, 0x00, &block);
        assert_eq!(parse(&header), done(V2_MAX_LEN, None));
        assert_eq!(parse(&header[..V2_MAX_LEN - 1]), ProxyStatus::NeedMore);
    }

    #[test]
    fn port_parsing() {
        let cases: &[(&[u8], Option<u16>)] = &[
            (b"0", Some(0)),
            (b"1", Some(1)),
            (b"65535", Some(65535)),
            (b"65536", None),
            (b"99999", None),
            (b"", None),
            (b"00", None),
            (b"0001", None),
            (b"100000", None),
            (b"1a", None),
        ];
        for (field, want) in cases {
            assert_eq!(parse_port(field).ok(), *want, "{field:?}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn never_panics_after_a_v1_prefix(tail in proptest::collection::vec(any::<u8>(), 0..120)) {
            let mut bytes = V1_PREFIX.to_vec();
            bytes.extend_from_slice(&tail);
            let _ = parse(&bytes);
        }

        #[test]
        fn never_panics_after_the_v2_signature(tail in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut bytes = V2_SIGNATURE.to_vec();
            bytes.extend_from_slice(&tail);
            if let ProxyStatus::Done { header_len, .. } = parse(&bytes) {
                prop_assert!(header_len <= bytes.len());
            }
        }

        #[test]
        fn any_tcp_v1_header_parses_and_every_prefix_needs_more(
            src in any::<IpAddr>(), dst in any::<IpAddr>(), sport in any::<u16>(), dport in any::<u16>()
        ) {
            let (proto, dst) = match (src, dst) {
                (IpAddr::V4(_), IpAddr::V4(d)) => ("TCP4", IpAddr::V4(d)),
                (IpAddr::V4(_), IpAddr::V6(_)) => ("TCP4", IpAddr::V4(Ipv4Addr::LOCALHOST)),
                (IpAddr::V6(_), IpAddr::V6(d)) => ("TCP6", IpAddr::V6(d)),
                (IpAddr::V6(_), IpAddr::V4(_)) => ("TCP6", IpAddr::V6(Ipv6Addr::LOCALHOST)),
            };
            let line = format!("PROXY {proto} {src} {dst} {sport} {dport}\r\n");
            let want = ProxyStatus::Done { header_len: line.len(), source: Some(SocketAddr::new(src, sport)) };
            prop_assert_eq!(parse(line.as_bytes()), want);
            for cut in 0..line.len() {
                prop_assert_eq!(parse(&line.as_bytes()[..cut]), ProxyStatus::NeedMore);
            }
        }
    }
}
