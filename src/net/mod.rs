//! The server layer every protocol shares, and nothing protocol-specific: listeners (bound or
//! passed by systemd), the caps on connections, the accept loop that admits a connection
//! (reading its PROXY header when the listener is behind a proxy) and hands it to a protocol
//! [`accept::Service`], and the plain / TLS stream with its STARTTLS upgrade and deadlines.
//!
//! - [`kind`]: [`kind::ListenerKind`], the protocol and port a listener serves.
//! - [`listener`]: binding the configured addresses, or taking the sockets systemd passed.
//! - [`listenfds`]: the sockets systemd passes (sd_listen_fds(3)).
//! - [`caps`]: connections counted overall and per client address; [`caps::Refused`].
//! - [`proxy`]: the PROXY protocol header, v1 and v2 (sans-I/O).
//! - [`accept`]: the accept loop and the [`accept::Service`] a protocol implements.
//! - [`stream`]: the client's stream, plain or TLS, and deadlines.
//! - [`http`]: one bounded HTTP/1.1 connection (monitoring and web endpoints), the cap on them.

pub mod accept;
pub mod caps;
pub mod http;
pub mod kind;
pub mod listener;
pub mod listenfds;
pub mod proxy;
pub mod stream;

pub use accept::{Accepted, Admission, DeadPeerTimers, Service, accept_loop};
pub use kind::{ListenerKind, Protocol};
pub use stream::Stream;
