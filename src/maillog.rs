//! One mail-log line per event.
