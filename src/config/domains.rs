//! The `domains/` folder: one local domain per folder, with its users and aliases.
pub struct Domains;
