//! The durable on-disk queue (SPEC §8): one file per message under `data_dir/queue`,
//! envelope and data together, recipients tracked one by one.
//!
//! - [`store`]: the file format, durable put, status records, load on start.
//! - [`listing`]: what is queued, as `util queue` and `/queue` show it.
//! - [`retry`]: the retry schedule, a pure function of age.
//! - [`runner`]: the delivery loop: one task per message, attempts and retries.
//! - [`direct`]: mail for local users only, delivered to the Maildirs before the 250.

pub mod direct;
pub mod listing;
pub mod retry;
pub mod runner;
pub mod store;
