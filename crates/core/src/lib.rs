//! apppass's core: what every part shares. The configuration ([`config`]), the rules
//! ([`policy`]), app passwords and their hashes ([`secret`]), the stores ([`store`]),
//! and times ([`time`]); the
//! module's arguments ([`args`]).
#![forbid(unsafe_code)]

pub mod args;
pub mod config;
pub mod policy;
pub mod secret;
pub mod store;
pub mod time;
