//! Reaching apppassd from the command line.

use std::path::Path;
use std::time::Duration;

use apppass_proto::{Client, ClientError};
use nix::unistd::{Uid, User};

/// Connects to apppassd on `socket`, trusting root, `daemon_user` (the user apppassd
/// runs as) and the caller itself to answer.
pub fn connect(socket: &Path, timeout: Duration, daemon_user: &str) -> Result<Client, ClientError> {
    let own = Uid::effective().as_raw();
    let mut trusted = vec![0, own];
    if let Ok(Some(u)) = User::from_name(daemon_user) {
        trusted.push(u.uid.as_raw());
    }
    Client::connect(socket, timeout, &trusted)
}
