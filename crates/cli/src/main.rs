//! The `apppass` command. Its code is in `cli.rs`; the core it drives is apppass-core.
#![forbid(unsafe_code)]

mod cli;
mod doctor;

fn main() -> std::process::ExitCode {
    cli::main()
}
