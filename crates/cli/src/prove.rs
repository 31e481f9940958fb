//! Proving who you are before a credential is made: apppassd runs its `apppass` PAM
//! stack for the caller's account and sends each of the stack's prompts here; the
//! person answers at the terminal (echo off for secrets), or a script gives the account
//! password on standard input (`--password-stdin`, for a stack that asks only that).
//! Never in argv or the environment, where other processes can read it.

use std::fs::File;
use std::io::{self, BufRead, Write};

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
    let hidden = prompt.style == PromptStyle::EchoOff;
    let saved = if hidden { echo_off(&tty) } else { None };
    let shown = write!(out, "{}", for_terminal(&prompt.text)).and_then(|()| out.flush());
    if let Err(e) = shown {
        if let Some(saved) = saved {
            let _ = nix::sys::termios::tcsetattr(&tty, nix::sys::termios::SetArg::TCSANOW, &saved);
        }
        return Err(no_terminal(e));
    }
    let mut line = Zeroizing::new(String::new());
    let read = io::BufReader::new(&tty).read_line(&mut line);
    if let Some(saved) = saved {
        let _ = nix::sys::termios::tcsetattr(&tty, nix::sys::termios::SetArg::TCSANOW, &saved);
        let _ = writeln!(out);
    }
    read.map_err(no_terminal)?;
    let trimmed = line.trim_end_matches(['\n', '\r']).len();
    line.truncate(trimmed);
    Ok(Secret::new(line.as_bytes()))
}

/// Turns the terminal's echo off; the settings to restore.
fn echo_off(tty: &File) -> Option<nix::sys::termios::Termios> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let saved = tcgetattr(tty).ok()?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    tcsetattr(tty, SetArg::TCSANOW, &quiet).ok()?;
    Some(saved)
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
