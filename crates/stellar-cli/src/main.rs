//! The `stellar` binary: a thin layer over [`stellar_cli::App`].

use std::process::ExitCode;

fn main() -> ExitCode {
    stellar_cli::App::new().main()
}
