//! apppass's core: what every part shares. The configuration ([`config`]), the rules
//! ([`policy`]), app passwords and their hashes ([`secret`]), the stores ([`store`]),
//! times ([`time`]) and source networks ([`networks`]). apppassd is its one user of the
//! stores; the CLI takes times and the scope rule from it.
#![forbid(unsafe_code)]

pub mod config;
pub mod networks;
pub mod policy;
pub mod secret;
pub mod store;
pub mod time;
