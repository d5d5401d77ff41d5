use super::*;

const POLICY_A: &str =
    "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.test\r\nmax_age: 86400\r\n";
const POLICY_B: &str = "version: STSv1\nmode: testing\nmx: *.example.test\nmax_age: 3600\n";

fn policy(mode: Mode, mx: &[&str], max_age: u64) -> Policy {
    Policy {
        id: "id1".into(),
        mode,
        mx: mx.iter().map(|s| s.to_string()).collect(),
        max_age,
        fetched_at: 100,
    }
}

#[test]
fn parse_policy_table() {
    use PolicyError::{BadLine, MaxAge, Missing, Mx, Version};
    let ok = |mode, mx: &[&str], max_age| Ok(policy(mode, mx, max_age));
    let cases: &[(&str, Result<Policy, PolicyError>)] = &[
        (POLICY_A, ok(Mode::Enforce, &["mx1.example.test"], 86400)),
        (POLICY_B, ok(Mode::Testing, &["*.example.test"], 3600)),
        // Several mx, extra whitespace, unknown keys, upper-case hosts, no final newline.
        (
            "version:STSv1\nmode:  enforce \nmx: A.example.com.\nmx: *.b.example\nfoo: bar\nmax_age: 0",
            ok(Mode::Enforce, &["a.example.com", "*.b.example"], 0),
        ),
        (
            "version: STSv1\nmode: none\nmax_age: 31557600\n",
            ok(Mode::None, &[], 31557600),
        ),
        // The first of a repeated field wins.
        (
            "version: STSv1\nmode: testing\nmode: enforce\nmx: m.x\nmax_age: 5\nmax_age: 9\n",
            ok(Mode::Testing, &["m.x"], 5),
        ),
        (
            "mode: enforce\nmx: m.x\nmax_age: 5\n",
            Err(Missing("version")),
        ),
        (
            "version: STSv2\nmode: enforce\nmx: m.x\nmax_age: 5\n",
            Err(Version("STSv2".into())),
        ),
        (
            "version: STSv1\nmx: m.x\nmax_age: 5\n",
            Err(Missing("mode")),
        ),
        (
            "version: STSv1\nmode: Enforce\nmx: m.x\nmax_age: 5\n",
            Err(PolicyError::Mode("Enforce".into())),
        ),
        (
            "version: STSv1\nmode: enforce\nmx: m.x\n",
            Err(Missing("max_age")),
        ),
        (
            "version: STSv1\nmode: enforce\nmx: m.x\nmax_age: 31557601\n",
            Err(MaxAge("31557601".into())),
        ),
        (
            "version: STSv1\nmode: enforce\nmx: m.x\nmax_age: -1\n",
            Err(MaxAge("-1".into())),
        ),
        (
            "version: STSv1\nmode: enforce\nmx: m.x\nmax_age: 99999999999\n",
            Err(MaxAge("99999999999".into())),
        ),
        (
            "version: STSv1\nmode: enforce\nmx: m.x\nmax_age: \n",
            Err(MaxAge("".into())),
        ),
        (
            "version: STSv1\nmode: testing\nmax_age: 5\n",
            Err(Missing("mx")),
        ),
        (
            "version: STSv1\nmode: enforce\nmx: a.*.com\nmax_age: 5\n",
            Err(Mx("a.*.com".into())),
        ),
        (
            "version: STSv1\nmode: enforce\nmx: \nmax_age: 5\n",
            Err(Mx("".into())),
        ),
        (
            "version: STSv1\nmode enforce\n",
            Err(BadLine("mode enforce".into())),
        ),
        (
            "<html>hello</html>",
            Err(BadLine("<html>hello</html>".into())),
        ),
        ("", Err(Missing("version"))),
    ];
    for (text, want) in cases {
        assert_eq!(&parse_policy(text, "id1", 100), want, "{text:?}");
    }
}

#[test]
fn parse_txt_table() {
    let cases: &[(&str, Option<&str>)] = &[
        ("v=STSv1; id=20160831085700Z;", Some("20160831085700Z")),
        ("v=STSv1;id=abc", Some("abc")),
        ("v=STSv1; id=abc; ext=1;", Some("abc")),
        ("v=STSv1; ext=1; id=X9", Some("X9")),
        (
            "v=STSv1; id=12345678901234567890123456789012;",
            Some("12345678901234567890123456789012"),
        ),
        ("v=STSv1; id=123456789012345678901234567890123;", None),
        ("v=STSv1; id=;", None),
        ("v=STSv1; id=a-b;", None),
        ("v=STSv1;", None),
        ("id=abc; v=STSv1;", None),
        ("v=STSv2; id=abc;", None),
        ("v=spf1 -all", None),
        ("v=STSv1; junk; id=abc", None),
    ];
    for (record, want) in cases {
        assert_eq!(parse_txt(record).as_deref(), *want, "{record:?}");
    }
}

#[test]
fn select_txt_table() {
    let s = |v: &[&str]| v.iter().map(|r| r.to_string()).collect::<Vec<_>>();
    let cases: &[(Vec<String>, Option<&str>)] = &[
        (s(&[]), None),
        (s(&["v=STSv1; id=a;"]), Some("a")),
        (s(&["v=spf1 -all", "v=STSv1; id=a;"]), Some("a")),
        (s(&["v=STSv1; id=a;", "v=STSv1; id=b;"]), None),
        (s(&["v=STSv1; id=!;"]), None),
    ];
    for (records, want) in cases {
        assert_eq!(select_txt(records).as_deref(), *want, "{records:?}");
    }
}

#[test]
fn mx_allowed_table() {
    let p = policy(Mode::Enforce, &["mail.example.com", "*.example.net"], 1);
    let cases = [
        ("mail.example.com", true),
        ("MAIL.Example.COM.", true),
        ("other.example.com", false),
        ("example.com", false),
        ("mx1.example.net", true),
        ("MX1.EXAMPLE.NET.", true),
        // The wildcard stands for exactly one label.
        ("example.net", false),
        ("a.b.example.net", false),
        (".example.net", false),
        ("mx1.example.net.evil", false),
        ("", false),
    ];
    for (host, want) in cases {
        assert_eq!(p.mx_allowed(host), want, "{host}");
    }
    assert!(p.enforced());
    assert!(!policy(Mode::Testing, &[], 1).enforced());
}

#[test]
fn expiry() {
    let p = policy(Mode::Enforce, &["m"], 50);
    for (now, want) in [(100, false), (149, false), (150, true), (u64::MAX, true)] {
        assert_eq!(p.expired(now), want, "{now}");
    }
}

#[test]
fn content_type_table() {
    let cases = [
        (Some("text/plain"), true),
        (Some("Text/Plain; charset=utf-8"), true),
        (Some("text/html"), false),
        (Some("text/plainx"), false),
        (None, false),
    ];
    for (value, want) in cases {
        let header = value.map(|v| header::HeaderValue::from_str(v).unwrap());
        assert_eq!(
            check_content_type("h", header.as_ref()).is_ok(),
            want,
            "{value:?}"
        );
    }
}

/// A CA, a leaf certificate issued by it, and a tiny HTTPS responder (also used by
/// `dns-check`'s tests).
pub(crate) mod fixture {
    use super::*;
    use futures_rustls::TlsAcceptor;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use smol::io::{AsyncReadExt, AsyncWriteExt};
    use smol::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub struct TestCa {
        pub cert: CertificateDer<'static>,
        pub pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    impl TestCa {
        pub fn new() -> TestCa {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let cert = params.self_signed(&key).unwrap();
            TestCa {
                cert: cert.der().clone(),
                pem: cert.pem(),
                issuer: Issuer::new(params, key),
            }
        }
        pub fn roots(&self) -> Arc<rustls::RootCertStore> {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.cert.clone()).unwrap();
            Arc::new(roots)
        }
        /// (leaf certificate PEM, its key PEM) for `name`.
        pub fn leaf(&self, name: &str) -> (String, String) {
            let key = KeyPair::generate().unwrap();
            let params = CertificateParams::new(vec![name.to_string()]).unwrap();
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        }
    }

    /// What the server answers next.
    #[derive(Clone)]
    pub struct Reply {
        pub status: &'static str,
        pub content_type: &'static str,
        pub body: String,
    }

    pub fn reply(status: &'static str, content_type: &'static str, body: &str) -> Reply {
        Reply {
            status,
            content_type,
            body: body.to_string(),
        }
    }

    pub struct State {
        pub reply: Mutex<Reply>,
        pub hits: AtomicUsize,
        pub last_request: Mutex<String>,
    }

    pub struct HttpsServer {
        pub state: Arc<State>,
        _task: smol::Task<()>,
    }

    impl HttpsServer {
        pub fn set(&self, reply: Reply) {
            *self.state.reply.lock().unwrap() = reply;
        }
        pub fn hits(&self) -> usize {
            self.state.hits.load(Ordering::SeqCst)
        }
    }

    /// Serves on `ip`:443; None (the test reports its skip) when the port cannot be bound:
    /// port 443 needs root, or a lower net.ipv4.ip_unprivileged_port_start.
    pub fn start(ip: [u8; 4], leaf: &(String, String)) -> Option<HttpsServer> {
        let addr = SocketAddr::from((ip, HTTPS_PORT));
        let listener = match smol::block_on(TcpListener::bind(addr)) {
            Ok(l) => l,
            Err(e) => {
                crate::testsupport::skip(&format!(
                    "cannot listen on {addr} ({e}): port 443 needs root, and no other server there"
                ));
                return None;
            }
        };
        let state = Arc::new(State {
            reply: Mutex::new(reply("200 OK", "text/plain", POLICY_A)),
            hits: AtomicUsize::new(0),
            last_request: Mutex::new(String::new()),
        });
        let acceptor = TlsAcceptor::from(Arc::new(server_config(leaf)));
        let task = smol::spawn(serve(listener, acceptor, state.clone()));
        Some(HttpsServer { state, _task: task })
    }

    fn server_config((cert, key): &(String, String)) -> rustls::ServerConfig {
        let chain = rustls_pemfile::certs(&mut cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key: PrivateKeyDer = rustls_pemfile::private_key(&mut key.as_bytes())
            .unwrap()
            .unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap()
    }

    async fn serve(listener: TcpListener, acceptor: TlsAcceptor, state: Arc<State>) {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, state) = (acceptor.clone(), state.clone());
            smol::spawn(async move {
                let _ = answer(acceptor, tcp, &state).await;
            })
            .detach();
        }
    }

    async fn answer(acceptor: TlsAcceptor, tcp: TcpStream, state: &State) -> io::Result<()> {
        let mut tls = acceptor.accept(tcp).await?;
        let mut request = Vec::new();
        let mut chunk = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16384 {
            let n = tls.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            request.extend_from_slice(&chunk[..n]);
        }
        state.hits.fetch_add(1, Ordering::SeqCst);
        *state.last_request.lock().unwrap() = String::from_utf8_lossy(&request).into();
        let r = state.reply.lock().unwrap().clone();
        let head = format!(
            "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            r.status,
            r.content_type,
            r.body.len()
        );
        tls.write_all(head.as_bytes()).await?;
        tls.write_all(r.body.as_bytes()).await?;
        tls.close().await
    }
}

use fixture::{TestCa, reply};

const NOW: u64 = 1_000_000;

/// Runs `fut` under plain smol with a deadline, as the server does.
fn run<T>(fut: impl std::future::Future<Output = T>) -> T {
    smol::block_on(async {
        let timeout = async {
            smol::Timer::after(Duration::from_secs(60)).await;
            panic!("test deadline passed");
        };
        smol::future::or(fut, timeout).await
    })
}

/// dnsmasq serving `_mta-sts.example.test` with `id` (none: no record) and
/// `mta-sts.example.test` at `ip`.
fn dns(id: Option<&str>, ip: [u8; 4]) -> Option<(crate::dns::test_server::DnsServer, Arc<Dns>)> {
    let [a, b, c, d] = ip;
    let mut args = vec![format!("--address=/mta-sts.example.test/{a}.{b}.{c}.{d}")];
    if let Some(id) = id {
        args.push(format!(
            "--txt-record=_mta-sts.example.test,v=STSv1; id={id};"
        ));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = crate::dns::test_server::start(&args)?;
    let dns = Arc::new(Dns::new(&[server.addr]).unwrap());
    Some((server, dns))
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// The RFC 8461 §5.1 life cycle against a real HTTPS server and DNS server.
#[test]
fn fetch_cache_refresh_fallback() {
    const IP: [u8; 4] = [127, 0, 8, 1];
    let ca = TestCa::new();
    let Some(server) = fixture::start(IP, &ca.leaf("mta-sts.example.test")) else {
        return;
    };
    let Some((_dns1, dns1)) = dns(Some("1"), IP) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let roots = Some(ca.roots());
    let sts = MtaSts::new(tmp.path(), dns1, roots.clone()).unwrap();

    // First use: fetched and cached on disk.
    let a = run(sts.policy("example.test", NOW)).expect("policy A");
    assert_eq!(
        (a.id.as_str(), a.mode, a.fetched_at),
        ("1", Mode::Enforce, NOW)
    );
    assert_eq!(a.mx, ["mx1.example.test"]);
    assert_eq!(server.hits(), 1);
    let request = server.state.last_request.lock().unwrap().clone();
    assert!(
        request.starts_with("GET /.well-known/mta-sts.txt HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(
        request
            .to_ascii_lowercase()
            .contains("host: mta-sts.example.test\r\n"),
        "{request}"
    );
    let file = tmp.path().join("mta-sts/example.test");
    assert_eq!(mode_of(&file), 0o600);
    assert_eq!(mode_of(&tmp.path().join("mta-sts")), 0o700);

    // Same id: the cache answers, the server is not asked.
    server.set(reply("200 OK", "text/plain", POLICY_B));
    assert_eq!(run(sts.policy("EXAMPLE.test.", NOW + 10)), Some(a.clone()));
    assert_eq!(server.hits(), 1);

    // New id (a new process over the same data_dir): fetched again.
    let Some((_dns2, dns2)) = dns(Some("2"), IP) else {
        return;
    };
    let sts = MtaSts::new(tmp.path(), dns2, roots.clone()).unwrap();
    let b = run(sts.policy("example.test", NOW + 20)).expect("policy B");
    assert_eq!(
        (b.id.as_str(), b.mode, b.max_age),
        ("2", Mode::Testing, 3600)
    );
    assert_eq!(server.hits(), 2);

    // Another new id, but the fetch fails: the unexpired cached policy stays in force.
    let Some((_dns3, dns3)) = dns(Some("3"), IP) else {
        return;
    };
    let sts = MtaSts::new(tmp.path(), dns3, roots.clone()).unwrap();
    server.set(reply("404 Not Found", "text/plain", "no"));
    assert_eq!(run(sts.policy("example.test", NOW + 30)), Some(b.clone()));
    assert_eq!(server.hits(), 3);
    // ... until it expires (the fetch is tried again and fails again).
    assert_eq!(run(sts.policy("example.test", NOW + 20 + 3600)), None);
    assert_eq!(server.hits(), 4);

    // The TXT record is gone: an unexpired cached policy is still used, else none.
    let Some((_dns4, dns4)) = dns(None, IP) else {
        return;
    };
    let sts = MtaSts::new(tmp.path(), dns4.clone(), roots.clone()).unwrap();
    assert_eq!(run(sts.policy("example.test", NOW + 40)), Some(b));
    let fresh = tempfile::tempdir().unwrap();
    let sts = MtaSts::new(fresh.path(), dns4, roots).unwrap();
    assert_eq!(run(sts.policy("example.test", NOW)), None);
    assert_eq!(server.hits(), 4);
}

/// Answers that must not produce a policy (RFC 8461 §3.3), and a few that must.
#[test]
fn fetch_rules() {
    const IP: [u8; 4] = [127, 0, 8, 2];
    let ca = TestCa::new();
    let Some(server) = fixture::start(IP, &ca.leaf("mta-sts.example.test")) else {
        return;
    };
    let Some((_dns, dns)) = dns(Some("1"), IP) else {
        return;
    };
    let none = "version: STSv1\nmode: none\nmax_age: 60\n";
    let big = format!("{POLICY_A}{}", "x: y\n".repeat(MAX_BODY / 5 + 1));
    let cases = [
        (reply("200 OK", "text/plain", POLICY_A), true),
        (reply("200 OK", "text/plain; charset=utf-8", POLICY_A), true),
        (reply("200 OK", "text/plain", none), true),
        (
            reply("301 Moved Permanently", "text/plain", POLICY_A),
            false,
        ),
        (reply("500 Oops", "text/plain", POLICY_A), false),
        (reply("200 OK", "text/html", POLICY_A), false),
        (reply("200 OK", "text/plain", &big), false),
        (reply("200 OK", "text/plain", "garbage"), false),
    ];
    for (r, want) in cases {
        let (status, content_type) = (r.status, r.content_type);
        server.set(r);
        let tmp = tempfile::tempdir().unwrap();
        let sts = MtaSts::new(tmp.path(), dns.clone(), Some(ca.roots())).unwrap();
        let got = run(sts.policy("example.test", NOW));
        assert_eq!(got.is_some(), want, "{status} {content_type}");
        // Mode `none` policies are cached like the others.
        assert_eq!(tmp.path().join("mta-sts/example.test").exists(), want);
    }
    // A certificate from another CA (the system's roots do not know ours) is refused.
    let tmp = tempfile::tempdir().unwrap();
    let other = TestCa::new();
    let sts = MtaSts::new(tmp.path(), dns.clone(), Some(other.roots())).unwrap();
    assert_eq!(run(sts.policy("example.test", NOW)), None);
    if let Ok(sts) = MtaSts::new(tmp.path(), dns, None) {
        assert_eq!(run(sts.policy("example.test", NOW)), None);
    }
}

/// A certificate for another name is refused even from a trusted CA.
#[test]
fn fetch_wrong_name() {
    const IP: [u8; 4] = [127, 0, 8, 3];
    let ca = TestCa::new();
    let Some(server) = fixture::start(IP, &ca.leaf("www.example.test")) else {
        return;
    };
    let Some((_dns, dns)) = dns(Some("1"), IP) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let sts = MtaSts::new(tmp.path(), dns, Some(ca.roots())).unwrap();
    assert_eq!(run(sts.policy("example.test", NOW)), None);
    // The handshake failed before any request.
    assert_eq!(server.hits(), 0);
}

#[test]
fn invalid_domains_have_no_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = Arc::new(Dns::new(&["127.0.0.1:9".parse().unwrap()]).unwrap());
    let sts = MtaSts::new(tmp.path(), dns, Some(TestCa::new().roots())).unwrap();
    for name in ["", "../x", "a/b", "1.2.3.4"] {
        assert_eq!(run(sts.policy(name, NOW)), None, "{name:?}");
    }
}

/// Runs `ssl_cert_file_child` in a child process with `SSL_CERT_FILE` set to a test CA: the
/// binary's way (no `roots` parameter) of trusting a test CA end to end.
#[test]
fn platform_verifier_honours_ssl_cert_file() {
    if !crate::testsupport::DNSMASQ.available() {
        return;
    }
    let ca = TestCa::new();
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = ca.leaf("mta-sts.example.test");
    fs::write(tmp.path().join("ca.pem"), &ca.pem).unwrap();
    fs::write(tmp.path().join("leaf.pem"), cert).unwrap();
    fs::write(tmp.path().join("leaf.key"), key).unwrap();
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "courier::mta_sts::tests::ssl_cert_file_child",
            "--exact",
            "--ignored",
        ])
        .args(["--nocapture", "--test-threads=1"])
        .env("SSL_CERT_FILE", tmp.path().join("ca.pem"))
        .env_remove("SSL_CERT_DIR")
        .env("TAMBO_TEST_MTA_STS_DIR", tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("fetched with SSL_CERT_FILE") || stderr.contains("skipped: "),
        "{stderr}"
    );
}

#[test]
#[ignore = "run by platform_verifier_honours_ssl_cert_file in a child process"]
fn ssl_cert_file_child() {
    const IP: [u8; 4] = [127, 0, 8, 4];
    let Some(dir) = std::env::var_os("TAMBO_TEST_MTA_STS_DIR") else {
        crate::testsupport::skip("run by platform_verifier_honours_ssl_cert_file only");
        return;
    };
    let dir = PathBuf::from(dir);
    let leaf = (
        fs::read_to_string(dir.join("leaf.pem")).unwrap(),
        fs::read_to_string(dir.join("leaf.key")).unwrap(),
    );
    let Some(_server) = fixture::start(IP, &leaf) else {
        return;
    };
    let Some((_dns, dns)) = dns(Some("1"), IP) else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let sts = MtaSts::new(data.path(), dns, None).unwrap();
    let got = run(sts.policy("example.test", NOW));
    assert_eq!(got.map(|p| p.id), Some("1".to_string()));
    eprintln!("fetched with SSL_CERT_FILE");
}
