//! Pipe aliases (`alias: | command args`).
