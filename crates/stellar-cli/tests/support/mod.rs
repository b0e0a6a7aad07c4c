//! Shared by the end-to-end tests of the `stellar` binary.

use std::process::Command;

/// `stellar ARGS…` with no `STELLAR_*` or `RUST_LOG` variable inherited from the test's
/// environment, so each test sets exactly the configuration it means.
pub(crate) fn stellar(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stellar"));
    scrub(&mut command);
    command.args(args);
    command
}

/// Removes inherited `STELLAR_*` and `RUST_LOG` variables from `command`.
pub(crate) fn scrub(command: &mut Command) {
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("STELLAR_")) {
        command.env_remove(name);
    }
    command.env_remove("RUST_LOG");
}
