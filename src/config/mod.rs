//! Configuration: `conf/tambo.json` ([`settings`]), the `domains/` folder ([`domains`]),
//! and [`Live`], the configuration in force that a reload swaps.

pub mod domains;
pub mod live;
pub mod settings;

pub use domains::Domains;
pub use live::Live;
pub use settings::Settings;
