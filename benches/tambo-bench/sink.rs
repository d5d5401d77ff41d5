//! The sink MTA: accepts everything, keeps nothing, counts messages and their recipients
//! (a server may forward a message for five recipients as one transaction or as five).
//!
//! It must never be the bottleneck: it answers each pipelined command group in one write
//! (RFC 2920), offers no STARTTLS (both servers then send in plain text, so TLS cost does not
//! blur the comparison) and looks at the data only for the end-of-data line.

use argh::FromArgs;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};
use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const GREETING: &[u8] = b"220 sink.test ESMTP bench sink\r\n";
const EHLO_REPLY: &[u8] = b"250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n\
    250-ENHANCEDSTATUSCODES\r\n250 SIZE 104857600\r\n";

/// Run the sink; `count` (messages), `recipients` (recipients of those messages) and `reset`
/// on stdin, one per line; exits when stdin closes.
#[derive(FromArgs)]
#[argh(subcommand, name = "sink")]
pub struct SinkArgs {
    /// address to listen on, host:port
    #[argh(option)]
    listen: String,
}

pub fn run(args: SinkArgs) -> Result<(), String> {
    let count = Arc::new(Counts::default());
    let listener = smol::block_on(TcpListener::bind(args.listen.as_str()))
        .map_err(|e| format!("listen on {}: {e}", args.listen))?;
    let served = count.clone();
    std::thread::spawn(move || {
        let ex = smol::LocalExecutor::new();
        smol::block_on(ex.run(accept_loop(&ex, listener, served)));
    });
    println!("ready");
    control(&count)
}

/// What the sink has received since the last `reset`.
#[derive(Default)]
struct Counts {
    messages: AtomicU64,
    recipients: AtomicU64,
}

/// The parent's questions on stdin; a closed stdin (the parent gone) ends the sink.
fn control(count: &Counts) -> Result<(), String> {
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| format!("stdin: {e}"))?;
        match line.trim() {
            "count" => println!("{}", count.messages.load(Ordering::SeqCst)),
            "recipients" => println!("{}", count.recipients.load(Ordering::SeqCst)),
            "reset" => {
                count.messages.store(0, Ordering::SeqCst);
                count.recipients.store(0, Ordering::SeqCst);
                println!("ok");
            }
            other => println!("? {other}"),
        }
    }
    Ok(())
}

async fn accept_loop(ex: &smol::LocalExecutor<'_>, listener: TcpListener, count: Arc<Counts>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => ex.spawn(serve(stream, count.clone())).detach(),
            Err(e) => {
                eprintln!("sink: accept: {e}");
                smol::Timer::after(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve(mut stream: TcpStream, count: Arc<Counts>) {
    if let Err(e) = session(&mut stream, &count).await {
        eprintln!("sink: session: {e}");
    }
}

async fn session(stream: &mut TcpStream, count: &Counts) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    stream.write_all(GREETING).await?;
    let mut state = Sink::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let step = state.feed(&buf[..n]);
        // Recipients first: whoever sees the message count sees its recipients too.
        count
            .recipients
            .fetch_add(step.recipients, Ordering::SeqCst);
        count.messages.fetch_add(step.messages, Ordering::SeqCst);
        if !step.out.is_empty() {
            stream.write_all(&step.out).await?;
        }
        if step.quit {
            return Ok(());
        }
    }
}

/// The protocol of one session, free of I/O: bytes in, replies out.
#[derive(Default)]
struct Sink {
    /// A command line not yet ended by LF.
    line: Vec<u8>,
    in_data: bool,
    /// In data: at the start of a line, and the bytes of ".\r\n" seen there so far.
    data_line_start: bool,
    dot_line: usize,
    /// RCPT commands since the last MAIL or RSET.
    rcpts: u64,
}

#[derive(Default)]
struct Step {
    out: Vec<u8>,
    messages: u64,
    /// The recipients of those messages.
    recipients: u64,
    quit: bool,
}

impl Sink {
    fn feed(&mut self, mut input: &[u8]) -> Step {
        let mut step = Step::default();
        while !input.is_empty() && !step.quit {
            input = if self.in_data {
                self.data(input, &mut step)
            } else {
                self.command(input, &mut step)
            };
        }
        step
    }

    fn command<'a>(&mut self, input: &'a [u8], step: &mut Step) -> &'a [u8] {
        let Some(nl) = memchr::memchr(b'\n', input) else {
            self.line.extend_from_slice(input);
            return &[];
        };
        self.line.extend_from_slice(&input[..nl]);
        let verb = self
            .line
            .get(..4)
            .unwrap_or(&self.line)
            .to_ascii_uppercase();
        self.line.clear();
        match &verb[..] {
            b"EHLO" => step.out.extend_from_slice(EHLO_REPLY),
            b"HELO" | b"MAIL" | b"RCPT" | b"RSET" | b"NOOP" => {
                match &verb[..] {
                    b"MAIL" | b"RSET" => self.rcpts = 0,
                    b"RCPT" => self.rcpts += 1,
                    _ => {}
                }
                step.out.extend_from_slice(b"250 2.0.0 OK\r\n")
            }
            b"DATA" => {
                step.out.extend_from_slice(b"354 go ahead\r\n");
                self.in_data = true;
                self.data_line_start = true;
                self.dot_line = 0;
            }
            b"QUIT" => {
                step.out.extend_from_slice(b"221 2.0.0 bye\r\n");
                step.quit = true;
            }
            _ => step.out.extend_from_slice(b"502 5.5.1 not implemented\r\n"),
        }
        &input[nl + 1..]
    }

    /// RFC 5321 §4.1.1.4: the data ends with a line holding only "."; the CRLF before it
    /// may be the one that ended the DATA command.
    fn data<'a>(&mut self, mut input: &'a [u8], step: &mut Step) -> &'a [u8] {
        const END: &[u8] = b".\r\n";
        while !input.is_empty() {
            if self.data_line_start {
                // Match ".\r\n" byte by byte, so it may be split across reads.
                while self.dot_line < END.len() && !input.is_empty() {
                    if input[0] != END[self.dot_line] {
                        break;
                    }
                    self.dot_line += 1;
                    input = &input[1..];
                }
                if self.dot_line == END.len() {
                    self.in_data = false;
                    step.messages += 1;
                    step.recipients += std::mem::take(&mut self.rcpts);
                    step.out.extend_from_slice(b"250 2.0.0 OK discarded\r\n");
                    return input;
                }
                if input.is_empty() {
                    return input;
                }
                self.data_line_start = false;
                self.dot_line = 0;
            }
            match memchr::memchr(b'\n', input) {
                Some(nl) => {
                    self.data_line_start = true;
                    input = &input[nl + 1..];
                }
                None => return &[],
            }
        }
        input
    }
}

#[cfg(test)]
mod tests {
    use super::Sink;

    fn run(chunks: &[&[u8]]) -> (String, u64) {
        let (out, messages, _) = run_counting(chunks);
        (out, messages)
    }

    /// The replies, the messages and their recipients.
    fn run_counting(chunks: &[&[u8]]) -> (String, u64, u64) {
        let mut sink = Sink::default();
        let (mut out, mut messages, mut recipients) = (Vec::new(), 0, 0);
        for c in chunks {
            let step = sink.feed(c);
            out.extend(step.out);
            messages += step.messages;
            recipients += step.recipients;
        }
        (String::from_utf8(out).unwrap(), messages, recipients)
    }

    #[test]
    fn recipients_count_per_finished_message() {
        let (_, n, r) = run_counting(&[
            b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRCPT TO:<e@d>\r\nDATA\r\nx\r\n.\r\n",
            b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRSET\r\n",
            b"MAIL FROM:<a@b>\r\nRCPT TO:<f@d>\r\nDATA\r\ny\r\n.\r\nQUIT\r\n",
        ]);
        assert_eq!((n, r), (2, 3));
    }

    #[test]
    fn a_pipelined_group_is_answered_in_one_go() {
        let (out, n) = run(&[b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"]);
        assert_eq!(out, "250 2.0.0 OK\r\n250 2.0.0 OK\r\n354 go ahead\r\n");
        assert_eq!(n, 0);
    }

    #[test]
    fn the_end_of_data_is_found_across_any_split() {
        let whole: &[u8] = b"DATA\r\nSubject: x\r\n\r\n..dot\r\nbody.\r\n.\r\nQUIT\r\n";
        for cut in 0..whole.len() {
            let (out, n) = run(&[&whole[..cut], &whole[cut..]]);
            assert_eq!(n, 1, "cut at {cut}");
            assert!(
                out.ends_with("250 2.0.0 OK discarded\r\n221 2.0.0 bye\r\n"),
                "{out}"
            );
        }
    }

    #[test]
    fn an_empty_message_ends_right_after_data() {
        let (out, n) = run(&[b"DATA\r\n.\r\n"]);
        assert_eq!(n, 1);
        assert_eq!(out, "354 go ahead\r\n250 2.0.0 OK discarded\r\n");
    }

    #[test]
    fn a_dot_that_starts_a_longer_line_is_data() {
        let (_, n) = run(&[b"DATA\r\n.x\r\n.\r"]);
        assert_eq!(n, 0);
    }
}
