//! Reading SMTP replies (RFC 5321 §4.2) with a deadline on every read.

use smol::io::AsyncReadExt;
use smol::net::TcpStream;
use std::time::Duration;

pub const READ_DEADLINE: Duration = Duration::from_secs(30);

/// A whole reply: its code and its lines joined with `\n`.
pub struct Reply {
    pub code: u16,
    pub text: String,
}

/// Reads replies off one connection; bytes past the current reply stay for the next one.
pub struct ReplyReader {
    buf: Vec<u8>,
    start: usize,
}

impl ReplyReader {
    pub fn new() -> Self {
        ReplyReader {
            buf: Vec::with_capacity(4096),
            start: 0,
        }
    }

    pub async fn read(&mut self, stream: &mut TcpStream) -> Result<Reply, String> {
        let mut lines: Vec<String> = Vec::new();
        loop {
            let line = self.line(stream).await?;
            let last = line.len() < 4 || line.as_bytes()[3] != b'-';
            lines.push(line);
            if last {
                break;
            }
        }
        let final_line = lines.last().map(String::as_str).unwrap_or("");
        let code = final_line
            .get(..3)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("garbage reply: {final_line:?}"))?;
        Ok(Reply {
            code,
            text: lines.join("\n"),
        })
    }

    async fn line(&mut self, stream: &mut TcpStream) -> Result<String, String> {
        loop {
            if let Some(nl) = memchr::memchr(b'\n', &self.buf[self.start..]) {
                let end = self.start + nl;
                let raw = &self.buf[self.start..end];
                let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
                let line = String::from_utf8_lossy(raw).into_owned();
                self.start = end + 1;
                return Ok(line);
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let have = self.buf.len();
            self.buf.resize(have + 4096, 0);
            let read = smol::future::or(
                async {
                    stream
                        .read(&mut self.buf[have..])
                        .await
                        .map_err(|e| e.to_string())
                },
                async {
                    smol::Timer::after(READ_DEADLINE).await;
                    Err(format!("no reply within {}s", READ_DEADLINE.as_secs()))
                },
            )
            .await;
            let n = read?;
            self.buf.truncate(have + n);
            if n == 0 {
                return Err("connection closed by server".into());
            }
        }
    }
}
