//! Incremental DATA reader (RFC 5321 §4.1.1.4, §4.5.2): dot-unstuffing, end at CRLF.CRLF,
//! bare CR / bare LF refused (SMTP smuggling), size cap without holding the message,
//! Received headers counted (loop detection, §6.3).

/// What `DataReader::feed` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataStatus {
    /// All input consumed; the end has not been seen yet.
    NeedMore,
    /// The terminating CRLF.CRLF was consumed.
    Done(DataSummary),
    /// A CR not followed by LF, or an LF not preceded by CR.
    BareLineEnding,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSummary {
    /// Size of the unstuffed message (all of it, even past the cap).
    pub size: u64,
    /// `size` went over the cap: `out` stopped receiving bytes at that point.
    pub too_big: bool,
    /// Header lines named `Received` in the header section.
    pub received_headers: u32,
}

#[derive(Debug, Clone)]
pub struct DataReader {}

impl DataReader {
    pub fn new(max_size: u64) -> DataReader {
        todo!("{max_size}")
    }
    /// Consumes a prefix of `input`, appending the unstuffed message bytes (CRLF line endings,
    /// the final CRLF before the dot included, the dot line excluded) to `out` while under the
    /// cap. Returns how many bytes were consumed and the status; bytes after the terminating
    /// CRLF.CRLF are not consumed (they are the next pipelined command).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, DataStatus) {
        todo!("{}{}", input.len(), out.len())
    }
}
