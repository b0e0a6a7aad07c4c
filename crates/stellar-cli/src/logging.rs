//! The process's tracing subscriber: the binary's job, never a library's.

use std::io::IsTerminal;

use anyhow::{Context, Result};
use tracing_subscriber::EnvFilter;

/// Installs a subscriber writing to stderr with `filter` (the config key `log`). Does nothing if
/// one is installed already (an embedding binary or a test may have done it).
pub(crate) fn init(filter: &str) -> Result<()> {
    let filter = EnvFilter::try_new(filter).with_context(|| {
        format!("invalid value for `log`: expected a tracing filter such as `info`, got {filter:?}")
    })?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // A supervised worker whose supervisor died writes to a closed pipe: drop the lines
        // quietly instead of reporting each failure with `eprintln!`, which panics.
        .log_internal_errors(false)
        .try_init();
    Ok(())
}
