//! APPEND (RFC 3501 §6.3.11) with UIDPLUS's APPENDUID (RFC 4315 §3). A large message literal
//! arrives spooled to an unnamed file (the framer hands it out in pieces), so a session holds
//! no more memory for a 50 MB APPEND than for a small one, and nothing of it afterwards.

use crate::imapd::commands::flags::from_wire;
use crate::imapd::commands::{folder_name, report_changes, store_error, user_store};
use crate::imapd::conn::Conn;
use crate::imapd::server::Server;
use crate::mailbox::StoreError;
use imap_codec::imap_types::datetime::DateTime;
use imap_codec::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_codec::imap_types::flag::Flag;
use imap_codec::imap_types::mailbox::Mailbox;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

/// A file with no name (O_TMPFILE) in `data_dir`, for an APPEND literal of `len` octets: it
/// disappears with its descriptor, whatever happens to the session.
pub async fn spool_file(server: &Server, len: u64) -> std::io::Result<File> {
    let dir = server.config.settings.data_dir.clone();
    smol::unblock(move || {
        let file = crate::fsutil::unnamed_file(&dir)?;
        // Room for it now, so a full disk shows at the start rather than half-way.
        let _ = file.set_len(0);
        log::debug!("imap: spooling an APPEND literal of {len} octets");
        Ok(file)
    })
    .await
}

pub async fn append(
    conn: &mut Conn,
    tag: &str,
    mailbox: &Mailbox<'_>,
    flags: &[Flag<'_>],
    date: Option<&DateTime>,
    message: LiteralOrLiteral8<'_>,
    spool: Option<File>,
) {
    let name = match folder_name(mailbox) {
        Ok(n) => n,
        Err(e) => return store_error(conn, tag, "APPEND", &e),
    };
    let flags = match from_wire(flags) {
        Ok(f) => f,
        Err(why) => return conn.bad(tag, &why),
    };
    let internaldate = date.map(|d| d.as_ref().timestamp());
    let inline = match &message {
        LiteralOrLiteral8::Literal(l) => l.as_ref().to_vec(),
        LiteralOrLiteral8::Literal8(l) => l.data.to_vec(),
    };
    let spooled = spool.is_some();
    if !spooled && inline.is_empty() {
        // An announced message that could not be spooled (disk full, say).
        return conn.no(tag, Some("SERVERBUG"), "The message could not be stored");
    }
    if inline.len() as u64 > conn.server.max_message_size {
        return conn.no(tag, Some("TOOBIG"), "Message too large");
    }
    let Some(store) = user_store(conn) else {
        return conn.bad(tag, "Log in first");
    };
    let target = name.clone();
    let appended = smol::unblock(move || {
        let mut reader: Box<dyn Read> = match spool {
            Some(mut file) => {
                file.seek(SeekFrom::Start(0))
                    .map_err(|source| StoreError::Io {
                        path: "the APPEND spool".into(),
                        source,
                    })?;
                Box::new(file)
            }
            None => Box::new(std::io::Cursor::new(inline)),
        };
        store.append(&target, &mut reader, &flags, internaldate)
    })
    .await;
    match appended {
        Ok((uidvalidity, uid)) => {
            report_changes(conn, true).await;
            let code = format!("APPENDUID {uidvalidity} {uid}");
            crate::imapd::wire::status(
                &mut conn.out,
                Some(tag),
                crate::imapd::wire::Status::Ok,
                Some(&code),
                "APPEND completed",
            );
        }
        // RFC 3501 §6.3.11: TRYCREATE when the folder does not exist.
        Err(StoreError::NoSuchFolder) => conn.no(tag, Some("TRYCREATE"), "No such folder"),
        Err(e) => store_error(conn, tag, "APPEND", &e),
    }
}
