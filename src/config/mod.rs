//! Configuration: `conf/tambo.json` ([`settings`]), the `domains/` folder ([`domains`]),
//! [`Live`], the configuration in force that a reload swaps, and [`watch`], which reloads the
//! domains when their files change.

pub mod domains;
pub mod live;
pub mod settings;
pub mod watch;

pub use domains::Domains;
pub use live::Live;
pub use settings::Settings;
