//! Configuration: `conf/tambo.json` ([`settings`]) and the `domains/` folder ([`domains`]).

pub mod domains;
pub mod settings;

pub use domains::Domains;
pub use settings::Settings;
