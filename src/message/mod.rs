//! A message, below the queue that keeps it and the couriers that deliver it: its envelope,
//! its data on disk, and how to read that without holding it whole.
//!
//! - [`envelope`]: sender, recipients with their state, what tambo added on the way in.
//! - [`stored`]: a message on disk ([`StoredMessage`]) and its id, read through pread.
//! - [`mod@split`]: a message read as its header section (bounded) and its body in chunks.
//! - [`date`]: RFC 5322 dates for the headers tambo writes.
//! - [`from_rewrite`]: the From: of a forwarded copy made DMARC-safe (SPEC §8).

pub mod date;
pub mod envelope;
pub mod from_rewrite;
pub mod split;
pub mod stored;

pub use envelope::{Envelope, QueuedRcpt, RcptState, now_secs};
pub use split::{CHUNK, HeaderError, MAX_HEADER_SECTION, Split, for_each_chunk, split};
pub use stored::{FileRange, MessageReader, QueueId, StoredMessage};
