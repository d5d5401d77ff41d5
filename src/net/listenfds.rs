//! Sockets passed by systemd socket activation (`LISTEN_FDS`, sd_listen_fds(3)).
//!
//! The protocol: when `LISTEN_PID` is our pid, `LISTEN_FDS` sockets start at fd 3 and
//! `LISTEN_FDNAMES` (colon-separated, one per fd) names them, from each socket unit's
//! `FileDescriptorName=`. As chasquid's socket units do, the names `smtp`, `submission` and
//! `submission_tls` (and `imap`, `imaps`, `pop3`, `pop3s`) say which listener a socket is; a
//! socket without one of these names is matched by its local port against the configured
//! listen addresses. The variables are unset
//! once read, so that nothing we start (hooks, MDAs) believes the sockets are its own.

use crate::net::kind::ListenerKind;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// sd_listen_fds(3): the first passed fd.
pub const SD_LISTEN_FDS_START: RawFd = 3;
/// More would be a mistake in the unit files, not a real setup.
const MAX_FDS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ListenFdsError {
    #[error("LISTEN_{var}={value:?} is not a number")]
    NotANumber { var: &'static str, value: String },
    #[error("LISTEN_FDS={0}: too many sockets (at most {MAX_FDS})")]
    TooMany(usize),
    #[error("LISTEN_FDNAMES names {names} sockets but LISTEN_FDS={fds}")]
    NameCount { names: usize, fds: usize },
    #[error("socket passed by systemd as fd {fd}: {source}")]
    Fd { fd: RawFd, source: std::io::Error },
    #[error("socket passed by systemd as fd {fd} is not a listening TCP socket")]
    NotListening { fd: RawFd },
    #[error(
        "socket passed by systemd as fd {fd} ({name}, {addr}) matches no listener: name it \
         after one (FileDescriptorName=smtp, submission, submission_tls, ...), or give its \
         port in that listener's <name>_listen setting"
    )]
    Unmatched {
        fd: RawFd,
        name: String,
        addr: SocketAddr,
    },
}

/// Passed fds and their names, before they are checked and adopted.
type Slots = Vec<(RawFd, Option<String>)>;

/// One passed socket.
#[derive(Debug)]
pub struct Passed {
    pub fd: RawFd,
    /// Its `FileDescriptorName=`, if systemd gave one.
    pub name: Option<String>,
    pub listener: TcpListener,
}

/// The sockets systemd passed to this process, or `None` when it is not socket-activated.
/// Call once, before other threads start: it unsets the variables (as
/// `sd_listen_fds(unset_environment=1)`).
pub fn take() -> Result<Option<Vec<Passed>>, ListenFdsError> {
    let var = |name| std::env::var(name).ok();
    let (pid, fds, names) = (var("LISTEN_PID"), var("LISTEN_FDS"), var("LISTEN_FDNAMES"));
    if pid.is_none() && fds.is_none() {
        return Ok(None);
    }
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // SAFETY: `serve` calls this before it starts any thread (executor, DNS runtime,
        // monitoring), so no other thread reads the environment meanwhile.
        unsafe { std::env::remove_var(name) };
    }
    let Some(slots) = parse(
        pid.as_deref(),
        fds.as_deref(),
        names.as_deref(),
        std::process::id(),
    )?
    else {
        return Ok(None);
    };
    slots
        .into_iter()
        .map(|(fd, name)| {
            let listener = adopt(fd)?;
            Ok(Passed { fd, name, listener })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The fds and names the variables describe, when `LISTEN_PID` is `our_pid` (sd_listen_fds(3):
/// variables meant for another process, such as our parent, are ignored).
fn parse(
    pid: Option<&str>,
    fds: Option<&str>,
    names: Option<&str>,
    our_pid: u32,
) -> Result<Option<Slots>, ListenFdsError> {
    let number = |var, value: &str| {
        value
            .parse::<usize>()
            .map_err(|_| ListenFdsError::NotANumber {
                var,
                value: value.to_string(),
            })
    };
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(None);
    };
    if number("PID", pid)? != our_pid as usize {
        return Ok(None);
    }
    let count = number("FDS", fds)?;
    if count == 0 {
        return Ok(None);
    }
    if count > MAX_FDS {
        return Err(ListenFdsError::TooMany(count));
    }
    let names: Vec<Option<String>> = match names {
        None | Some("") => vec![None; count],
        Some(text) => text
            .split(':')
            .map(|n| (!n.is_empty()).then(|| n.to_string()))
            .collect(),
    };
    if names.len() != count {
        return Err(ListenFdsError::NameCount {
            names: names.len(),
            fds: count,
        });
    }
    // `count` is at most MAX_FDS, so the fd numbers fit.
    Ok(Some((SD_LISTEN_FDS_START..).zip(names).collect()))
}

/// Takes ownership of a passed fd once it is known to be a listening TCP socket.
fn adopt(fd: RawFd) -> Result<TcpListener, ListenFdsError> {
    let os_err = |fd| ListenFdsError::Fd {
        fd,
        source: std::io::Error::last_os_error(),
    };
    // SAFETY: fcntl on any integer is defined; it fails with EBADF when the fd is not open.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(os_err(fd));
    }
    // sd_listen_fds(3) marks them close-on-exec: hooks and MDAs must not inherit them.
    // SAFETY: `fd` is open (checked above).
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(os_err(fd));
    }
    if sockopt(fd, libc::SO_TYPE) != Some(libc::SOCK_STREAM)
        || sockopt(fd, libc::SO_ACCEPTCONN) != Some(1)
    {
        return Err(ListenFdsError::NotListening { fd });
    }
    // SAFETY: LISTEN_PID named this process, so the fd was passed to us to own; it is open,
    // and `take` unset the variables, so no second call adopts it again.
    let listener = TcpListener::from(unsafe { OwnedFd::from_raw_fd(fd) });
    // A Unix socket has no IP address: refused here rather than at the first accept.
    match listener.local_addr() {
        Ok(_) => Ok(listener),
        Err(_) => Err(ListenFdsError::NotListening { fd }),
    }
}

/// An integer socket option (`None` if it cannot be read: not a socket).
fn sockopt(fd: RawFd, option: libc::c_int) -> Option<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid and writable, and `len` is the size of `value`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(value)
}

/// The listener a passed socket serves: by name, else by its local port among the configured
/// addresses of each kind (`groups`, in order; the first match wins).
pub fn kind_of(
    name: Option<&str>,
    local: SocketAddr,
    groups: &[(&[SocketAddr], ListenerKind)],
) -> Option<ListenerKind> {
    // A name counts only for a kind being served (`groups`): a socket for a protocol that is
    // off is an error, not a listener nobody answers on.
    let by_name = name
        .and_then(ListenerKind::from_name)
        .filter(|kind| groups.iter().any(|(_, served)| served == kind));
    by_name.or_else(|| {
        groups
            .iter()
            .find(|(addrs, _)| addrs.iter().any(|a| a.port() == local.port()))
            .map(|(_, kind)| *kind)
    })
}

/// Every passed socket with its listener kind; one that matches none is an error.
pub fn assign(
    passed: Vec<Passed>,
    groups: &[(&[SocketAddr], ListenerKind)],
) -> Result<Vec<(TcpListener, ListenerKind)>, ListenFdsError> {
    passed
        .into_iter()
        .map(|p| {
            let addr = p
                .listener
                .local_addr()
                .map_err(|source| ListenFdsError::Fd { fd: p.fd, source })?;
            match kind_of(p.name.as_deref(), addr, groups) {
                Some(kind) => Ok((p.listener, kind)),
                None => Err(ListenFdsError::Unmatched {
                    fd: p.fd,
                    name: p.name.unwrap_or_else(|| "no name".into()),
                    addr,
                }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ListenerKind::{Smtp as Mx, Submission, SubmissionTls};

    #[test]
    fn parse_follows_sd_listen_fds() {
        let named = Some(vec![(3, Some("smtp".into())), (4, None)]);
        let unnamed = Some(vec![(3, None), (4, None)]);
        // (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES, expected)
        let cases = [
            (Some("42"), Some("2"), Some("smtp:"), named),
            (Some("42"), Some("2"), None, unnamed.clone()),
            (Some("42"), Some("2"), Some(""), unnamed),
            (Some("43"), Some("2"), None, None), // for another process
            (None, Some("2"), None, None),
            (Some("42"), None, None, None),
            (Some("42"), Some("0"), Some(""), None),
        ];
        for (pid, fds, names, want) in cases {
            let got = parse(pid, fds, names, 42).unwrap_or_else(|e| panic!("{fds:?}: {e}"));
            assert_eq!(got, want, "{pid:?} {fds:?} {names:?}");
        }
    }

    #[test]
    fn parse_errors_name_the_problem() {
        let cases = [
            (
                Some("x"),
                Some("1"),
                None,
                "LISTEN_PID=\"x\" is not a number",
            ),
            (
                Some("42"),
                Some("-1"),
                None,
                "LISTEN_FDS=\"-1\" is not a number",
            ),
            (Some("42"), Some("1000"), None, "too many sockets"),
            (
                Some("42"),
                Some("2"),
                Some("smtp"),
                "names 1 sockets but LISTEN_FDS=2",
            ),
        ];
        for (pid, fds, names, want) in cases {
            let err = parse(pid, fds, names, 42).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn kind_by_name_then_by_port() {
        let smtp: Vec<SocketAddr> = vec!["0.0.0.0:25".parse().unwrap()];
        let sub: Vec<SocketAddr> = vec!["[::]:587".parse().unwrap()];
        let tls: Vec<SocketAddr> = vec!["127.0.0.1:465".parse().unwrap()];
        let groups = [
            (&smtp[..], Mx),
            (&sub[..], Submission),
            (&tls[..], SubmissionTls),
        ];
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        let cases = [
            (Some("smtp"), "127.0.0.1:2525", Some(Mx)),
            (Some("submission"), "[::]:25", Some(Submission)),
            (Some("submission_tls"), "127.0.0.1:1", Some(SubmissionTls)),
            (None, "[::]:25", Some(Mx)),
            (Some("tambo-smtp.socket"), "192.0.2.1:587", Some(Submission)),
            (Some("unknown"), "0.0.0.0:465", Some(SubmissionTls)),
            (None, "127.0.0.1:2525", None),
            (Some("SMTP"), "127.0.0.1:2525", None),
        ];
        for (name, local, want) in cases {
            assert_eq!(kind_of(name, at(local), &groups), want, "{name:?} {local}");
        }
    }

    #[test]
    fn assign_matches_or_names_the_stray_socket() {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let b = TcpListener::bind("127.0.0.1:0").unwrap();
        let b_addr = b.local_addr().unwrap();
        let sub = [b_addr];
        // A name counts for a kind being served: here smtp (on no configured address) and
        // submission.
        let groups = [(&[][..], Mx), (&sub[..], Submission)];
        let passed = |name: Option<&str>, listener| Passed {
            fd: 3,
            name: name.map(String::from),
            listener,
        };
        let got = assign(vec![passed(Some("smtp"), a), passed(None, b)], &groups).unwrap();
        let kinds: Vec<_> = got.iter().map(|(_, k)| *k).collect();
        assert_eq!(kinds, [Mx, Submission]);

        let stray = TcpListener::bind("127.0.0.1:0").unwrap();
        let err = assign(vec![passed(Some("imap"), stray)], &groups)
            .unwrap_err()
            .to_string();
        assert!(err.contains("fd 3 (imap, 127.0.0.1:"), "{err}");
        assert!(err.contains("matches no listener"), "{err}");
    }

    #[test]
    fn adopt_refuses_what_is_not_a_listening_tcp_socket() {
        // A connected (not listening) socket, and an fd that is not open.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&client);
        assert!(matches!(
            adopt(fd),
            Err(ListenFdsError::NotListening { .. })
        ));
        assert!(matches!(adopt(100_000), Err(ListenFdsError::Fd { .. })));
    }
}
