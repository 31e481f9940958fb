//! The `apppass` command. Its code is in `cli.rs`; the core it drives is the library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
