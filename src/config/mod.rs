//! Configuration: `conf/tambo.json` ([`settings`]), the `domains/` folder ([`domains`]),
//! `conf/access` ([`access`]), [`Live`], a value that a reload swaps, [`live_config`], the
//! whole configuration in force while `serve` runs, [`stamps`] and [`watch`], which notice
//! that the domains' files changed.

pub mod access;
pub mod domains;
pub mod live;
pub mod live_config;
pub mod settings;
pub mod stamps;
pub mod watch;

pub use domains::Domains;
pub use live::Live;
pub use settings::Settings;
