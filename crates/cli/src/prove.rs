//! Proving who you are before a credential is made: apppassd runs its `apppass` PAM
//! stack for the caller's account and sends each of the stack's prompts here; the
//! person answers at the terminal (echo off for secrets), or a script gives the account
//! password on standard input (`--password-stdin`, for a stack that asks only that).
//! Never in argv or the environment, where other processes can read it.

use std::fs::File;
use std::io::{self, BufRead, Write};
use std::sync::{Mutex, Once, PoisonError};
use std::thread;

use nix::sys::termios::{LocalFlags, SetArg, Termios, tcgetattr, tcsetattr};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::Signals;
use signal_hook::low_level::emulate_default_handler;

use apppass_proto::text::for_terminal;
use apppass_proto::{Client, Prompt, PromptStyle, Request, Response, Secret};
use zeroize::Zeroizing;

use crate::cli::CliError;

/// Where the answers come from.
pub enum Answers {
    /// The person at the terminal (/dev/tty).
    Terminal,
    /// One line of standard input, for the stack's one password prompt.
    Stdin(Option<Zeroizing<String>>),
}

impl Answers {
    /// `--password-stdin`: reads the account password (one line) now.
    pub fn from_stdin() -> Result<Answers, CliError> {
        let mut line = Zeroizing::new(String::new());
        io::stdin().lock().read_line(&mut line).map_err(|e| {
            CliError::Other(format!("cannot read the password from standard input: {e}"))
        })?;
        let trimmed = line.trim_end_matches(['\n', '\r']).len();
        line.truncate(trimmed);
        if line.is_empty() {
            return Err(CliError::Usage(
                "--password-stdin: standard input held no password".into(),
            ));
        }
        Ok(Answers::Stdin(Some(line)))
    }

    /// The person at the terminal, if there is one: checked before apppassd starts
    /// anything.
    pub fn terminal() -> Result<Answers, CliError> {
        File::options()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .map_err(no_terminal)?;
        Ok(Answers::Terminal)
    }

    fn answer(&mut self, prompt: &Prompt) -> Result<Secret, CliError> {
        match self {
            Answers::Stdin(password) => match (prompt.style, password.take()) {
                (PromptStyle::EchoOff, Some(p)) => Ok(Secret::new(p.as_bytes())),
                _ => Err(CliError::Usage(format!(
                    "the apppass PAM stack asks more than the account password (\"{}\"): run \
                     apppass at a terminal, without --password-stdin",
                    for_terminal(prompt.text.trim())
                ))),
            },
            Answers::Terminal => ask(prompt),
        }
    }
}

fn no_terminal(e: io::Error) -> CliError {
    CliError::Usage(format!(
        "cannot ask for your account password ({e}): run apppass at a terminal, or give \
         the password on standard input with --password-stdin"
    ))
}

/// Asks `prompt` at the terminal; a secret with echo off.
fn ask(prompt: &Prompt) -> Result<Secret, CliError> {
    let tty = File::options()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(no_terminal)?;
    let mut out = &tty;
    // Echo goes off before the prompt shows, as getpass(3) does: whatever is typed
    // once the prompt is visible (or typed ahead of it) is never echoed.
    if prompt.style == PromptStyle::EchoOff {
        echo_off(&tty);
    }
    let mut line = Zeroizing::new(String::new());
    let read = write!(out, "{}", for_terminal(&prompt.text))
        .and_then(|()| out.flush())
        .and_then(|()| io::BufReader::new(&tty).read_line(&mut line));
    restore_echo();
    read.map_err(no_terminal)?;
    let trimmed = line.trim_end_matches(['\n', '\r']).len();
    line.truncate(trimmed);
    Ok(Secret::new(line.as_bytes()))
}

/// While echo is off: the terminal, and its settings from before.
static ECHO_OFF: Mutex<Option<(File, Termios)>> = Mutex::new(None);

/// Turns the terminal's echo off until [`restore_echo`]. A signal that ends apppass
/// meanwhile (Ctrl-C, a hang-up, a kill) puts it back first, as sudo and
/// readpassphrase(3) do: not every shell restores a terminal after its job dies.
fn echo_off(tty: &File) {
    guard_signals();
    let Ok(saved) = tcgetattr(tty) else { return };
    let Ok(own) = tty.try_clone() else { return };
    let mut quiet = saved.clone();
    // The typed newline is not echoed either: restore_echo ends the line.
    quiet
        .local_flags
        .remove(LocalFlags::ECHO | LocalFlags::ECHONL);
    let mut off = ECHO_OFF.lock().unwrap_or_else(PoisonError::into_inner);
    if tcsetattr(tty, SetArg::TCSANOW, &quiet).is_ok() {
        *off = Some((own, saved));
    }
}

/// Puts back what [`echo_off`] changed, if it still is; ends the hidden line.
fn restore_echo() {
    let off = ECHO_OFF
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Some((tty, saved)) = off {
        let _ = tcsetattr(&tty, SetArg::TCSANOW, &saved);
        let _ = writeln!(&tty);
    }
}

/// From the first hidden prompt on, one thread takes the signals that would end
/// apppass, restores the terminal, and then ends apppass by that signal as before.
fn guard_signals() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let Ok(mut signals) = Signals::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT]) else {
            return;
        };
        let _ = thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                if let Some(signal) = signals.forever().next() {
                    restore_echo();
                    let _ = emulate_default_handler(signal);
                    std::process::exit(128 + signal);
                }
            });
    });
}

/// Proves the caller on this connection: `Ok` once apppassd says so.
pub fn prove(client: &mut Client, answers: &mut Answers) -> Result<(), CliError> {
    let mut response = client.call(&Request::Prove)?;
    loop {
        match response {
            Response::Proved => return Ok(()),
            Response::Conversation(prompts) => {
                let mut given = Vec::with_capacity(prompts.len());
                for prompt in &prompts {
                    if prompt.style.is_question() {
                        given.push(answers.answer(prompt)?);
                    } else {
                        // What the stack tells the person (a second factor's hint, an
                        // expiry warning) goes to them, never into scripts' output.
                        eprintln!("{}", for_terminal(prompt.text.trim_end()));
                        given.push(Secret::default());
                    }
                }
                response = client.call(&Request::Answer { answers: given })?;
            }
            Response::Error { kind, message } => return Err(CliError::Refused(kind, message)),
            other => {
                return Err(CliError::Other(format!(
                    "unexpected answer from apppassd: {other:?}"
                )));
            }
        }
    }
}
