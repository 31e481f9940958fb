//! `pamlogin`: one login through the real libpam, as a server would do it, with the PAM
//! service file taken from a directory of your choosing (not /etc/pam.d). Used by the
//! demo; handy to try a service file before wiring it into a real server.
//!
//! Usage: pamlogin CONFDIR SERVICE USER [RHOST]   (the password is read from stdin)
//! Prints the PAM result; exits 0 on PAM_SUCCESS, 1 on any other result, 2 on bad usage.
//!
//! `pamlogin --serve CONFDIR` logs in once per line of stdin (SERVICE, USER, RHOST and
//! PASSWORD separated by tabs; an empty RHOST leaves PAM_RHOST unset) and answers each
//! with the PAM result and the milliseconds from `pam_start` to `pam_end`. The benchmark
//! times logins this way: in a process that, like sshd's or Dovecot's, has libpam loaded
//! and not SQLite, so that each login pays for loading what the module needs.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use pam_apppass::code::Code;
use pam_apppass::ffi::client::{self, Attempt};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() == 2 && args[0] == "--serve" {
        return serve(Path::new(&args[1]));
    }
    if !(3..=4).contains(&args.len()) {
        eprintln!("usage: pamlogin CONFDIR SERVICE USER [RHOST] < password");
        eprintln!("       pamlogin --serve CONFDIR < requests");
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

fn serve(confdir: &Path) -> ExitCode {
    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else {
            return ExitCode::from(2);
        };
        let fields: Vec<&str> = line.splitn(4, '\t').collect();
        let [service, user, rhost, password] = fields[..] else {
            eprintln!("pamlogin: a request is SERVICE<TAB>USER<TAB>RHOST<TAB>PASSWORD");
            return ExitCode::from(2);
        };
        let attempt = Attempt {
            confdir,
            service,
            user: user.as_bytes(),
            password: password.as_bytes(),
            rhost: (!rhost.is_empty()).then_some(rhost),
        };
        let start = Instant::now();
        let result = client::authenticate(&attempt);
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let answer = match result {
            Ok(outcome) => writeln!(out, "{} {ms:.4}", outcome.code.name()),
            Err(e) => writeln!(out, "ERROR {e}"),
        };
        if answer.and_then(|()| out.flush()).is_err() {
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
