//! apppass: per-service app passwords for Linux.
//!
//! This crate builds `pam_apppass.so` (the cdylib, whose only exports are the
//! `pam_sm_*` entry points in [`ffi`]) and the core shared with the `apppass` CLI, the
//! tests and the benchmark. A login flows one way: [`ffi`] entry point -> [`args`] ->
//! [`store`] lookup -> [`secret`] verification -> usage record -> return code, with the
//! logic in [`pam`].

pub mod args;
pub mod code;
pub mod config;
pub mod doctor;
pub mod ffi;
pub mod pam;
pub mod policy;
pub mod secret;
pub mod store;
pub mod time;
pub mod trust;
