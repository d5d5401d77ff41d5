use super::sink::{Script, Sink, item, pki};
use super::*;

const SHORT: Duration = Duration::from_secs(2);

fn rcpts(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn env(rcpts: &[String]) -> OutboundEnvelope<'_> {
    OutboundEnvelope {
        from: "sender@example.org",
        rcpts,
        smtputf8: false,
        body_8bit: false,
    }
}

/// Connects to the sink, says hello, sends one message; the client's TLS level too.
fn send(
    sink: &Sink,
    tls: TlsMode,
    env: &OutboundEnvelope<'_>,
    data: &[u8],
    prepend: &[u8],
) -> (
    Result<Vec<Result<(), DeliveryError>>, ClientError>,
    TlsLevel,
) {
    let dir = tempfile::tempdir().unwrap();
    let item = item(dir.path(), data);
    smol::block_on(async {
        let deadlines = Deadlines::uniform(SHORT);
        let mut client = Client::connect_tcp("mx.test", sink.addr, None, deadlines).await?;
        let level = async {
            client.hello(Protocol::Smtp, "tambo.test", &tls).await?;
            client.send_mail(env, &item, prepend).await
        };
        let result = level.await;
        let level = client.tls_level();
        client.quit().await;
        Ok::<_, ClientError>((result, level))
    })
    .unwrap()
}

fn summary(results: &[Result<(), DeliveryError>]) -> Vec<&'static str> {
    let one = |r: &Result<(), DeliveryError>| match r {
        Ok(()) => "ok",
        Err(e) if e.permanent => "perm",
        Err(_) => "temp",
    };
    results.iter().map(one).collect()
}

#[test]
fn deadlines_from_env_value() {
    let cases: &[(Option<&str>, u64, u64)] = &[
        (None, 30, 60),
        (Some("3"), 3, 3),
        (Some(" 45 "), 30, 45),
        (Some("0"), 30, 60),
        (Some("x"), 30, 60),
        (Some("120"), 30, 120),
    ];
    for &(value, connect, io) in cases {
        let d = Deadlines::parse(value);
        assert_eq!(d.connect, Duration::from_secs(connect), "{value:?}");
        assert_eq!(d.io, Duration::from_secs(io), "{value:?}");
    }
}

/// (RCPT replies, DATA reply, final reply, expected outcomes, data was sent).
type Case = (
    &'static [&'static str],
    &'static str,
    &'static str,
    &'static [&'static str],
    bool,
);

#[test]
fn outcomes_table() {
    let cases: &[Case] = &[
        (&["250 ok"], "354 go", "250 ok", &["ok", "ok", "ok"], true),
        (
            &["250 ok", "450 busy", "550 no"],
            "354 go",
            "250 ok",
            &["ok", "temp", "perm"],
            true,
        ),
        (
            &["250 ok", "450 busy", "550 no"],
            "354 go",
            "451 later",
            &["temp", "temp", "perm"],
            true,
        ),
        (
            &["250 ok", "450 busy", "550 no"],
            "354 go",
            "554 spam",
            &["perm", "temp", "perm"],
            true,
        ),
        (
            &["250 ok"],
            "451 no data now",
            "",
            &["temp", "temp", "temp"],
            false,
        ),
        (
            &["250 ok"],
            "554 no data",
            "",
            &["perm", "perm", "perm"],
            false,
        ),
        (
            &["550 no"],
            "354 go",
            "250 ok",
            &["perm", "perm", "perm"],
            false,
        ),
        (
            &["250 ok", "<close>"],
            "354 go",
            "250 ok",
            &["temp", "temp", "temp"],
            false,
        ),
        (
            &["250 ok"],
            "354 go",
            "<close>",
            &["temp", "temp", "temp"],
            true,
        ),
        (
            &["250 ok"],
            "354 go",
            "this is garbage",
            &["temp", "temp", "temp"],
            true,
        ),
        (
            &["250 ok"],
            "354 go",
            "<stall>",
            &["temp", "temp", "temp"],
            true,
        ),
        (
            &["250 ok"],
            "250 what",
            "",
            &["temp", "temp", "temp"],
            false,
        ),
    ];
    let to = rcpts(&["a@x.test", "b@x.test", "c@x.test"]);
    // Every case twice: one command at a time, and pipelined (RFC 2920) when offered.
    let variants = [false, true]
        .into_iter()
        .flat_map(|p| cases.iter().map(move |c| (p, c)));
    for (pipelining, &(rcpt, data, after, want, data_sent)) in variants {
        let sink = Sink::start(Script {
            rcpt: rcpt.iter().map(|s| s.to_string()).collect(),
            data: data.into(),
            after_data: after.into(),
            ehlo: ehlo(pipelining),
            ..Script::default()
        });
        let (result, _) = send(
            &sink,
            TlsMode::Off,
            &env(&to),
            b"Subject: x\r\n\r\nhi\r\n",
            b"",
        );
        let results = result.unwrap();
        let case = format!("{rcpt:?} {data} {after} pipelining={pipelining}");
        assert_eq!(summary(&results), want, "{case}");
        let seen = &sink.sessions()[0];
        // Pipelined, DATA goes out before the RCPT replies are known; this sink answers 354
        // even with no recipient, so the client ends it with an empty message.
        let message_sent = seen.data.as_ref().is_some_and(|d| !d.is_empty());
        assert_eq!(message_sent, data_sent, "{case}");
        // MAIL, three RCPT and DATA arrive together only when pipelined.
        assert_eq!(
            seen.batches.contains(&5),
            pipelining,
            "{case}: {:?}",
            seen.batches
        );
    }
}

fn ehlo(pipelining: bool) -> String {
    let ehlo = Script::default().ehlo;
    match pipelining {
        true => ehlo.replacen("250 ", "250-", 1) + "\r\n250 PIPELINING",
        false => ehlo,
    }
}

#[test]
fn pipelined_commands_go_in_one_write() {
    let sink = Sink::start(Script {
        ehlo: ehlo(true),
        ..Script::default()
    });
    let to = rcpts(&["a@x.test", "b@x.test"]);
    let (result, _) = send(&sink, TlsMode::Off, &env(&to), b"hi\r\n", b"");
    assert_eq!(summary(&result.unwrap()), ["ok", "ok"]);
    let seen = &sink.sessions()[0];
    assert_eq!(seen.data.as_deref(), Some(&b"hi\r\n"[..]));
    assert!(
        seen.batches.contains(&4),
        "MAIL, 2 RCPT and DATA not read as one batch: {:?}",
        seen.batches
    );
}

#[test]
fn reasons_name_the_host_and_the_reply() {
    let sink = Sink::start(Script {
        rcpt: vec!["550 5.1.1 no such user".into()],
        ..Script::default()
    });
    let to = rcpts(&["a@x.test"]);
    let (result, _) = send(&sink, TlsMode::Off, &env(&to), b"hi\r\n", b"");
    let err = result.unwrap().remove(0).unwrap_err();
    let want = format!(
        "mx.test[127.0.0.1]:{}: 550 5.1.1 no such user",
        sink.addr.port()
    );
    assert!(err.reason.starts_with(&want), "{}", err.reason);
    assert!(err.permanent);
}

#[test]
fn mail_from_errors_are_returned_whole() {
    let cases: &[(&str, bool)] = &[("451 4.3.0 try later", false), ("550 5.7.1 go away", true)];
    for pipelining in [false, true] {
        for &(reply, permanent) in cases {
            let sink = Sink::start(Script {
                mail: reply.into(),
                ehlo: ehlo(pipelining),
                ..Script::default()
            });
            let to = rcpts(&["a@x.test"]);
            let (result, _) = send(&sink, TlsMode::Off, &env(&to), b"hi\r\n", b"");
            let err = result.unwrap_err();
            assert_eq!(err.stage, Stage::MailFrom);
            assert_eq!(err.is_permanent(), permanent, "{reply}");
            let seen = &sink.sessions()[0];
            // Pipelined, RCPT and DATA were sent with MAIL (RFC 2920), but no message.
            assert_eq!(
                seen.commands.iter().any(|c| c.starts_with("RCPT")),
                pipelining
            );
            assert!(seen.data.as_ref().is_none_or(|d| d.is_empty()));
        }
    }
}

#[test]
fn message_on_the_wire() {
    let sink = Sink::start(Script::default());
    let to = rcpts(&["a@x.test", "b@x.test"]);
    let data = b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\nbare\nlf\r\n.\r\nend";
    let env = OutboundEnvelope {
        body_8bit: true,
        smtputf8: true,
        ..env(&to)
    };
    let (result, level) = send(&sink, TlsMode::Off, &env, data, b"DKIM-Signature: x\r\n");
    assert_eq!(summary(&result.unwrap()), ["ok", "ok"]);
    assert_eq!(level, TlsLevel::Plain);
    let seen = &sink.sessions()[0];
    let want = b"DKIM-Signature: x\r\nSubject: dots\r\n\r\n.leading dot\r\n..two\r\nbare\r\nlf\r\n.\r\nend\r\n";
    assert_eq!(seen.data.as_deref(), Some(&want[..]));
    let size = data.len() + 19;
    assert_eq!(
        seen.commands[..4],
        [
            "EHLO tambo.test".to_string(),
            format!("MAIL FROM:<sender@example.org> SIZE={size} BODY=8BITMIME SMTPUTF8"),
            "RCPT TO:<a@x.test>".into(),
            "RCPT TO:<b@x.test>".into(),
        ]
    );
    assert_eq!(seen.commands.last().map(String::as_str), Some("QUIT"));
}

#[test]
fn big_message_is_streamed_whole() {
    let sink = Sink::start(Script::default());
    let to = rcpts(&["a@x.test"]);
    let line = b".0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n";
    let data = line.repeat(5000);
    let (result, _) = send(&sink, TlsMode::Off, &env(&to), &data, b"");
    assert_eq!(summary(&result.unwrap()), ["ok"]);
    assert_eq!(sink.sessions()[0].data.as_deref(), Some(&data[..]));
}

#[test]
fn smtputf8_needed_but_not_offered_is_permanent() {
    let sink = Sink::start(Script {
        ehlo: "250-sink\r\n250 8BITMIME".into(),
        ..Script::default()
    });
    let to = rcpts(&["ü@x.test"]);
    let env = OutboundEnvelope {
        smtputf8: true,
        ..env(&to)
    };
    let (result, _) = send(&sink, TlsMode::Off, &env, b"hi\r\n", b"");
    let err = result.unwrap_err();
    assert!(err.is_permanent());
    assert!(err.to_string().contains("5.6.7"), "{err}");
}

#[test]
fn no_extensions_means_no_parameters_and_helo_fallback() {
    let sink = Sink::start(Script {
        ehlo: "502 5.5.1 what is EHLO".into(),
        ..Script::default()
    });
    let to = rcpts(&["a@x.test"]);
    let env = OutboundEnvelope {
        body_8bit: true,
        ..env(&to)
    };
    let (result, _) = send(&sink, TlsMode::Off, &env, b"hi\r\n", b"");
    assert_eq!(summary(&result.unwrap()), ["ok"]);
    let commands = &sink.sessions()[0].commands;
    assert_eq!(
        commands[..3],
        [
            "EHLO tambo.test",
            "HELO tambo.test",
            "MAIL FROM:<sender@example.org>"
        ]
    );
}

#[test]
fn bad_addresses_never_reach_the_wire() {
    let sink = Sink::start(Script::default());
    let to = rcpts(&["a@x.test\r\nRSET", "b@x.test"]);
    let (result, _) = send(&sink, TlsMode::Off, &env(&to), b"hi\r\n", b"");
    assert_eq!(summary(&result.unwrap()), ["perm", "ok"]);
    assert!(sink.sessions()[0].commands.iter().all(|c| c != "RSET"));
}

#[test]
fn greeting_and_hello_failures() {
    let cases: &[(&str, &str, Stage, bool)] = &[
        ("554 go away", "250 sink", Stage::Greeting, true),
        ("421 busy", "250 sink", Stage::Greeting, false),
        ("<close>", "250 sink", Stage::Greeting, false),
        ("<stall>", "250 sink", Stage::Greeting, false),
        ("220 hi", "421 closing", Stage::Hello, false),
        ("220 hi", "not smtp", Stage::Hello, false),
    ];
    for &(greeting, ehlo, stage, permanent) in cases {
        let sink = Sink::start(Script {
            greeting: greeting.into(),
            ehlo: ehlo.into(),
            ..Script::default()
        });
        let err = smol::block_on(async {
            let d = Deadlines::uniform(Duration::from_millis(500));
            let mut client = Client::connect_tcp("mx.test", sink.addr, None, d).await?;
            client.hello(Protocol::Smtp, "me", &TlsMode::Off).await
        })
        .unwrap_err();
        assert_eq!(
            (err.stage, err.is_permanent()),
            (stage, permanent),
            "{greeting} {ehlo}"
        );
    }
}

#[test]
fn starttls_levels() {
    let (config, roots) = pki("mx.test");
    let (_, other_roots) = pki("mx.test");
    let cases: &[(&str, Option<Arc<RootCertStore>>, TlsLevel)] = &[
        ("mx.test", None, TlsLevel::Insecure),
        ("mx.test", Some(roots.clone()), TlsLevel::Verified),
        ("other.test", Some(roots.clone()), TlsLevel::Insecure),
        ("mx.test", Some(other_roots), TlsLevel::Insecure),
    ];
    for (name, test_roots, want) in cases {
        let sink = Sink::start(Script {
            tls: Some(config.clone()),
            ..Script::default()
        });
        let tls = TlsMode::Opportunistic {
            server_name: name.to_string(),
            test_roots: test_roots.clone(),
        };
        let to = rcpts(&["a@x.test"]);
        let (result, level) = send(&sink, tls, &env(&to), b"hi\r\n", b"");
        assert_eq!(summary(&result.unwrap()), ["ok"]);
        assert_eq!(level, *want, "{name}");
        let seen = &sink.sessions()[0];
        assert!(seen.tls);
        assert_eq!(
            seen.commands[..3],
            ["EHLO tambo.test", "STARTTLS", "EHLO tambo.test"]
        );
    }
}

#[test]
fn starttls_off_or_refused_stays_plain() {
    let (config, _) = pki("mx.test");
    let opportunistic = TlsMode::Opportunistic {
        server_name: "mx.test".into(),
        test_roots: None,
    };
    let cases = [
        (TlsMode::Off, "220 go", false),
        (opportunistic, "454 4.7.0 TLS not available", false),
    ];
    for (mode, answer, tls) in cases {
        let sink = Sink::start(Script {
            tls: Some(config.clone()),
            starttls: answer.into(),
            ..Script::default()
        });
        let to = rcpts(&["a@x.test"]);
        let (result, level) = send(&sink, mode, &env(&to), b"hi\r\n", b"");
        assert_eq!(summary(&result.unwrap()), ["ok"]);
        assert_eq!((level, sink.sessions()[0].tls), (TlsLevel::Plain, tls));
    }
}

#[test]
fn broken_or_injected_handshake_is_an_error() {
    let (config, _) = pki("mx.test");
    let cases = [
        ("220 go", true, "TLS: "),
        ("220 go\r\n250 injected", false, "after the STARTTLS"),
    ];
    for (answer, broken_tls, want) in cases {
        let sink = Sink::start(Script {
            tls: Some(config.clone()),
            starttls: answer.into(),
            broken_tls,
            ..Script::default()
        });
        let err = smol::block_on(async {
            let d = Deadlines::uniform(SHORT);
            let mut client = Client::connect_tcp("mx.test", sink.addr, None, d).await?;
            let tls = TlsMode::Opportunistic {
                server_name: "mx.test".into(),
                test_roots: None,
            };
            client.hello(Protocol::Smtp, "me", &tls).await
        })
        .unwrap_err();
        assert_eq!(err.stage, Stage::StartTls, "{answer}");
        assert!(err.to_string().contains(want), "{err}");
        assert!(!err.is_permanent());
    }
}

#[test]
fn lmtp_one_reply_per_accepted_recipient() {
    let cases: &[(&[&str], &str, &[&str])] = &[
        (&["250 ok"], "250 a\r\n250 b\r\n250 c", &["ok", "ok", "ok"]),
        (
            &["250 ok"],
            "250 a\r\n452 full\r\n550 gone",
            &["ok", "temp", "perm"],
        ),
        (
            &["250 ok", "550 no", "250 ok"],
            "250 a\r\n450 c",
            &["ok", "perm", "temp"],
        ),
        // The connection drops after the first reply: the first is delivered.
        (&["250 ok"], "250 a\r\n<close>", &["ok", "temp", "temp"]),
    ];
    let to = rcpts(&["a@x.test", "b@x.test", "c@x.test"]);
    for &(rcpt, after, want) in cases {
        let script = Script {
            rcpt: rcpt.iter().map(|s| s.to_string()).collect(),
            after_data: after.replace("\r\n<close>", ""),
            ..Script::default()
        };
        let sink = Sink::start(script);
        let dir = tempfile::tempdir().unwrap();
        let item = item(dir.path(), b"hi\r\n");
        let results = smol::block_on(async {
            let d = Deadlines::uniform(Duration::from_millis(500));
            let client = Client::connect_tcp("lmtp", sink.addr, None, d)
                .await
                .unwrap();
            deliver_on(client, Protocol::Lmtp, "me", &env(&to), &item, b"").await
        });
        assert_eq!(summary(&results), want, "{after}");
        assert_eq!(sink.sessions()[0].commands[0], "LHLO me");
    }
}

#[test]
fn outbound_bind_sets_the_source_address() {
    let sink = Sink::start(Script::default());
    let bind: IpAddr = "127.0.0.2".parse().unwrap();
    let client = smol::block_on(Client::connect_tcp(
        "mx.test",
        sink.addr,
        Some(bind),
        Deadlines::uniform(SHORT),
    ));
    assert!(client.is_ok());
    smol::block_on(client.unwrap().quit());
    let peer = sink.sessions()[0].peer.unwrap();
    assert_eq!(peer.ip(), bind);
}

#[test]
fn connect_failures() {
    // A port nobody listens on (bound, then closed).
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let binds: [Option<IpAddr>; 3] = [
        None,
        Some("127.0.0.1".parse().unwrap()),
        Some("::1".parse().unwrap()),
    ];
    for bind in binds {
        let d = Deadlines::uniform(SHORT);
        let err = smol::block_on(Client::connect_tcp("mx.test", addr, bind, d))
            .err()
            .unwrap();
        assert_eq!(err.stage, Stage::Connect, "{bind:?}");
        assert!(!err.is_permanent());
    }
}
