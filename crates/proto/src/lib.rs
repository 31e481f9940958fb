//! What apppassd and its clients share: the protocol ([`wire`], [`message`]), the small
//! synchronous client every front uses ([`client`]), the configuration file's shape and
//! the few settings a client reads ([`conf`]), names ([`names`]), text shown to people
//! ([`text`]), and the ownership checks a root process makes of the files it trusts
//! ([`trust`]).
//!
//! The PAM module links this crate and almost nothing else: it runs inside sshd.
#![forbid(unsafe_code)]

pub mod args;
pub mod client;
pub mod conf;
pub mod helper;
pub mod message;
pub mod names;
pub mod text;
pub mod trust;
pub mod wire;

pub use client::{Client, ClientError};
pub use message::{
    AddRequest, Added, AuthAnswer, AuthRequest, ErrorKind, EventInfo, Identity, PasswordInfo,
    Prompt, PromptStyle, Reason, Request, Response, RevokeOutcome, Secret, Session, Status,
};
