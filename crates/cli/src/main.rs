//! The `apppass` command. Its code is in `cli.rs`; it talks to apppassd.
#![forbid(unsafe_code)]

mod cli;
mod daemon;
mod doctor;
mod prove;

fn main() -> std::process::ExitCode {
    cli::main()
}
