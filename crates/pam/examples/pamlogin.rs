//! `pamlogin`: one login through the real libpam, as a server would do it, with the PAM
//! service file taken from a directory of your choosing (not /etc/pam.d). Used by the
//! demo; handy to try a service file before wiring it into a real server.
//!
//! Usage: pamlogin CONFDIR SERVICE USER [RHOST]   (the password is read from stdin)
//! Prints the PAM result; exits 0 on PAM_SUCCESS, 1 on any other result, 2 on bad usage.

use std::io::BufRead;
use std::path::Path;
use std::process::ExitCode;

use pam_apppass::client::{self, Attempt};
use pam_apppass::code::Code;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !(3..=4).contains(&args.len()) {
        eprintln!("usage: pamlogin CONFDIR SERVICE USER [RHOST] < password");
        return ExitCode::from(2);
    }
    let mut password = String::new();
    if let Err(e) = std::io::stdin().lock().read_line(&mut password) {
        eprintln!("pamlogin: cannot read the password: {e}");
        return ExitCode::from(2);
    }
    let password = password.trim_end_matches(['\n', '\r']);
    let attempt = Attempt {
        confdir: Path::new(&args[0]),
        service: &args[1],
        user: args[2].as_bytes(),
        password: password.as_bytes(),
        rhost: args.get(3).map(String::as_str),
    };
    match client::authenticate(&attempt) {
        Ok(outcome) => {
            println!("{}", outcome.code.name());
            ExitCode::from(if outcome.code == Code::SUCCESS { 0 } else { 1 })
        }
        Err(e) => {
            eprintln!("pamlogin: {e}");
            ExitCode::from(2)
        }
    }
}
