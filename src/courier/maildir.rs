//! Built-in Maildir delivery: `data_dir/mail/<domain>/<user>/{tmp,new,cur}`, folders 0700,
//! files 0600, fsync before the rename into `new/` (maildir(5)).

use crate::courier::DeliveryError;
use crate::queue::store::Item;
use std::path::Path;

/// Delivers the message of `item` to the Maildir of `user@domain` under `mail_root`
/// (`data_dir/mail`), prepending `Return-Path` and `Delivered-To`, converting CRLF to LF.
/// Streams from the queue file; never holds the message in memory.
pub fn deliver(mail_root: &Path, hostname: &str, domain: &str, user: &str, item: &Item) -> Result<(), DeliveryError> {
    todo!("{mail_root:?}{hostname}{domain}{user}{item:?}")
}
