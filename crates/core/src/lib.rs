//! apppass's core: what every part shares. The configuration ([`config`]), the rules
//! ([`policy`]), app passwords and their hashes ([`secret`]), the stores ([`store`]),
//! times ([`time`]), source networks ([`networks`]) and the syslog writer ([`log`]).
//! apppassd is its one user of the stores; the CLI and the portal take settings, times
//! and the scope rule from it, and the portal its log.
#![forbid(unsafe_code)]

pub mod config;
pub mod log;
pub mod networks;
pub mod policy;
pub mod secret;
pub mod store;
pub mod time;
