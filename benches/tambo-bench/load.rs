//! The load: N messages of S bytes over C sessions, each session sending many messages with
//! MAIL/RCPT/DATA pipelined (RFC 2920). A 4xx is retried on the same session after 50 ms, as
//! an MTA would (chasquid 1.11 answers 451 when its queue holds 200 messages), and counted;
//! a 5xx or a broken session ends the run with an error.

use crate::monotonic_s;
use crate::reply::{Reply, ReplyReader};
use argh::FromArgs;
use smol::io::AsyncWriteExt;
use smol::net::TcpStream;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

const TEMP_FAIL_PAUSE: Duration = Duration::from_millis(50);

/// Send a load of messages; prints the figures as one JSON object.
#[derive(FromArgs)]
#[argh(subcommand, name = "load")]
pub struct LoadArgs {
    /// server address, host:port
    #[argh(option)]
    server: String,
    /// number of messages
    #[argh(option, default = "2000")]
    messages: usize,
    /// concurrent sessions
    #[argh(option, default = "16")]
    connections: usize,
    /// bytes per message on the wire
    #[argh(option, default = "4096")]
    size: usize,
    /// envelope sender and From:
    #[argh(option)]
    from: String,
    /// envelope recipient and To:
    #[argh(option)]
    to: String,
    /// seconds the whole load may take
    #[argh(option, default = "240")]
    deadline_s: u64,
}

#[derive(Default)]
struct Stats {
    latencies_s: Vec<f64>,
    accepted: u64,
    temp_failures: u64,
    first_temp_failure: Option<String>,
    last_250: Option<f64>,
}

impl Stats {
    fn temp_failure(&mut self, text: &str) {
        self.temp_failures += 1;
        if self.first_temp_failure.is_none() {
            self.first_temp_failure = Some(text.to_string());
        }
    }
}

/// What one session shares with the others: the messages, the work left, the figures.
struct Shared {
    messages: Vec<Vec<u8>>,
    envelope: Vec<u8>,
    work: RefCell<Vec<usize>>,
    stats: RefCell<Stats>,
}

pub fn run(args: LoadArgs) -> Result<(), String> {
    // The messages are built before the clock starts, as the Python load generator did.
    let messages = (0..args.messages)
        .map(|i| message(i, args.size, &args.from, &args.to))
        .collect();
    let shared = Rc::new(Shared {
        messages,
        envelope: format!(
            "MAIL FROM:<{}>\r\nRCPT TO:<{}>\r\nDATA\r\n",
            args.from, args.to
        )
        .into_bytes(),
        work: RefCell::new((0..args.messages).rev().collect()),
        stats: RefCell::new(Stats::default()),
    });
    let ex = smol::LocalExecutor::new();
    let start = monotonic_s();
    let outcome = smol::block_on(ex.run(smol::future::or(
        async {
            let sessions: Vec<_> = (0..args.connections)
                .map(|_| ex.spawn(session(args.server.clone(), shared.clone())))
                .collect();
            for s in sessions {
                s.await?;
            }
            Ok(())
        },
        async {
            smol::Timer::after(Duration::from_secs(args.deadline_s)).await;
            Err(format!("the load took longer than {}s", args.deadline_s))
        },
    )));
    outcome?;
    let stats = shared.stats.borrow();
    let out = serde_json::json!({
        "start": start,
        "last_250": stats.last_250,
        "accepted": stats.accepted,
        "temp_failures": stats.temp_failures,
        "first_temp_failure": stats.first_temp_failure,
        "latencies_s": stats.latencies_s,
    });
    println!("{out}");
    Ok(())
}

/// A message of exactly `size` bytes on the wire (CRLF lines, none starting with '.'),
/// followed by the end-of-data line; the same bytes as benches/smtpload.py's make_message.
fn message(index: usize, size: usize, from: &str, to: &str) -> Vec<u8> {
    let mut body = format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: bench message {index}\r\n\
         Message-ID: <bench-{index}@client.test>\r\n\
         Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\n"
    )
    .into_bytes();
    let line = [&[b'x'; 74][..], b"\r\n"].concat();
    while body.len() + line.len() <= size {
        body.extend_from_slice(&line);
    }
    let pad = size.saturating_sub(body.len());
    if pad >= 3 {
        body.extend(std::iter::repeat_n(b'y', pad - 2));
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b".\r\n");
    body
}

async fn session(server: String, shared: Rc<Shared>) -> Result<(), String> {
    let mut stream = smol::future::or(
        async {
            TcpStream::connect(server.as_str())
                .await
                .map_err(|e| format!("connect {server}: {e}"))
        },
        async {
            smol::Timer::after(crate::reply::READ_DEADLINE).await;
            Err(format!("connect {server}: timed out"))
        },
    )
    .await?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut replies = ReplyReader::new();
    let greeting = replies.read(&mut stream).await?;
    if greeting.code != 220 {
        return Err(format!("greeting: {}", greeting.text));
    }
    send(&mut stream, b"EHLO loadgen.client.test\r\n").await?;
    let ehlo = replies.read(&mut stream).await?;
    if ehlo.code != 250 {
        return Err(format!("EHLO: {}", ehlo.text));
    }
    let pipelining = ehlo.text.to_ascii_uppercase().contains("PIPELINING");
    loop {
        let Some(index) = shared.work.borrow_mut().pop() else {
            break;
        };
        let sent = one_message(&mut stream, &mut replies, &shared, pipelining, index).await?;
        if !sent {
            shared.work.borrow_mut().push(index);
            smol::Timer::after(TEMP_FAIL_PAUSE).await;
        }
    }
    send(&mut stream, b"QUIT\r\n").await?;
    replies.read(&mut stream).await?;
    Ok(())
}

async fn send(stream: &mut TcpStream, bytes: &[u8]) -> Result<(), String> {
    stream.write_all(bytes).await.map_err(|e| e.to_string())
}

/// True when the message got its 250; false on a 4xx (to be retried).
async fn one_message(
    stream: &mut TcpStream,
    replies: &mut ReplyReader,
    shared: &Shared,
    pipelining: bool,
    index: usize,
) -> Result<bool, String> {
    let mut got: Vec<Reply> = Vec::with_capacity(3);
    if pipelining {
        send(stream, &shared.envelope).await?;
        for _ in 0..3 {
            got.push(replies.read(stream).await?);
        }
    } else {
        for command in shared.envelope.split_inclusive(|&b| b == b'\n') {
            send(stream, command).await?;
            let reply = replies.read(stream).await?;
            let failed = reply.code >= 400;
            got.push(reply);
            if failed {
                break;
            }
        }
    }
    let data_ok = got.last().is_some_and(|r| r.code == 354);
    if !data_ok || got[..got.len() - 1].iter().any(|r| r.code >= 400) {
        return refused(stream, replies, &got, &shared.stats).await;
    }
    send(stream, &shared.messages[index]).await?;
    let start = monotonic_s();
    let reply = replies.read(stream).await?;
    let end = monotonic_s();
    let mut stats = shared.stats.borrow_mut();
    match reply.code {
        250 => {
            stats.latencies_s.push(end - start);
            stats.accepted += 1;
            stats.last_250 = Some(end);
            Ok(true)
        }
        400..=499 => {
            stats.temp_failure(&reply.text);
            Ok(false)
        }
        _ => Err(format!("end of DATA: {}", reply.text)),
    }
}

/// A refused envelope: a 4xx is counted and the transaction reset, anything else ends the run.
async fn refused(
    stream: &mut TcpStream,
    replies: &mut ReplyReader,
    got: &[Reply],
    stats: &RefCell<Stats>,
) -> Result<bool, String> {
    let Some(last) = got.last() else {
        return Err("no reply to the envelope".into());
    };
    let bad = got.iter().find(|r| r.code >= 400).unwrap_or(last);
    if !(400..500).contains(&bad.code) {
        return Err(format!("refused: {}", bad.text));
    }
    stats.borrow_mut().temp_failure(&bad.text);
    if last.code == 354 {
        // A pipelined DATA got its 354 although RCPT failed (RFC 2920 §3.1): end it empty.
        send(stream, b".\r\n").await?;
        replies.read(stream).await?;
    }
    send(stream, b"RSET\r\n").await?;
    replies.read(stream).await?;
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::message;

    #[test]
    fn messages_have_the_asked_size_before_the_end_of_data() {
        for size in [200, 1000, 4096, 4097, 4098] {
            let m = message(7, size, "a@b.test", "c@d.test");
            assert_eq!(m.len() - 3, size, "size {size}");
            assert!(m.ends_with(b"\r\n.\r\n"));
            assert!(
                !m[..m.len() - 3]
                    .windows(3)
                    .any(|w| w == b"\n.\r" || w == b"\n..")
            );
        }
    }
}
